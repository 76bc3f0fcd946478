"""Parameter counts equal what the sub-network really keeps, checked against real smaller models."""

import copy

import numpy as np
import torch
from support import assert_macs_equal_torch_flop_counter, full_sub_network, tiny_config, tiny_model
from transformers import AutoModelForSequenceClassification, BertConfig

from nas_llm.extraction.extract import extract_sub_network
from nas_llm.model.cost import count_parameters, measure_latency, parameter_bytes
from nas_llm.model.families import family_for, layers_of
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import sliced


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_full_sub_network_counts_every_parameter(family_name):
    model = tiny_model(family_name)
    count = count_parameters(model, full_sub_network(model))
    assert count.total == num_params(model)
    assert count.layers == num_params(layers_of(model))


def test_dropping_a_layer_counts_like_a_shallower_model(family_name):
    model = tiny_model(family_name)
    sub_network = full_sub_network(model)
    sub_network.head_mask[0] = False
    sub_network.ffn_mask[0] = False
    shallower = copy.deepcopy(model)
    del layers_of(shallower)[0]
    count = count_parameters(model, sub_network)
    assert (count.total, count.layers) == (num_params(shallower), num_params(layers_of(shallower)))


def test_layer_count_equals_the_layers_of_the_extracted_model(family_name):
    """The layer-only count (what the study budgets on) of pruned sub-networks, against a smaller model."""
    model = tiny_model(family_name)
    space = make_search_space("medium", model.config)
    rng = np.random.default_rng(3)
    for sub_network in (space.smallest(), space.sample(rng), space.sample(rng)):
        extracted = extract_sub_network(model, sub_network)
        assert count_parameters(model, sub_network).layers == num_params(layers_of(extracted))


def test_fewer_neurons_count_like_a_smaller_intermediate_size(family_name):
    model = tiny_model(family_name)
    sub_network = full_sub_network(model)
    sub_network.ffn_mask[:, 12:] = False
    config = tiny_config(family_name)
    if family_name == "gpt2":
        config.n_inner = 12
    else:
        config.intermediate_size = 12
    smaller = AutoModelForSequenceClassification.from_config(config)
    assert count_parameters(model, sub_network).total == num_params(smaller)


def test_removed_heads_count_their_projections(family_name):
    """Each removed head unit takes its q/k/v rows (with biases) and its output-projection columns."""
    model = tiny_model(family_name)
    family = family_for(model)
    config = model.config
    sub_network = full_sub_network(model)
    sub_network.head_mask[:, 0] = False
    removed = count_parameters(model, full_sub_network(model)).total - count_parameters(model, sub_network).total

    head_dim, hidden = family.head_dim(config), config.hidden_size
    query_heads = family.query_heads_per_unit(config)
    if family.name == "llama":  # GQA: a unit is one KV head and its query heads; q/k/v biases in Qwen2 only
        with_bias = family_name == "qwen2"
        per_layer = (2 * query_heads + 2) * head_dim * hidden + with_bias * (query_heads + 2) * head_dim
    else:
        per_layer = 4 * head_dim * hidden + 3 * head_dim
    assert removed == family.num_layers(config) * per_layer


def test_gqa_heads_count_like_a_model_with_fewer_kv_groups():
    model = tiny_model("llama")
    sub_network = full_sub_network(model)
    sub_network.head_mask[:, 1] = False
    config = tiny_config("llama")
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 4
    smaller = AutoModelForSequenceClassification.from_config(config)
    assert count_parameters(model, sub_network).total == num_params(smaller)




def test_macs_equal_torch_flop_counter_on_the_extracted_model(family_name):
    assert_macs_equal_torch_flop_counter(tiny_model(family_name), (10,))


def test_latency_is_measured_and_weight_memory_shrinks_with_the_sub_network():
    model = tiny_model("bert")
    space = make_search_space("small", model.config)
    full = measure_latency(model, space.largest(), sliced, batch_size=8, seq_len=32, repeats=5)
    assert full.median_ms > 0 and full.iqr_ms >= 0
    assert parameter_bytes(model, space.smallest()) < parameter_bytes(model, space.largest())


def test_latency_objective_ranks_half_the_macs_below_the_full_network():
    """What --objective latency minimises: a model large enough that compute, not overhead, takes the time."""
    from nas_llm.common.arguments import CostArguments
    from nas_llm.model.cost import CostMeter

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=128,
    )
    model = AutoModelForSequenceClassification.from_config(config).eval()
    space = make_search_space("small", config)
    half = space.to_sub_network({"num_layers": 2, "num_heads": 4, "num_units": 1024})
    args = CostArguments(cost_seq_len=64)
    meter = CostMeter(model, sliced, args, space.largest())
    costs = meter.measure(half, with_latency=True)
    assert abs(meter.relative(costs)["flops"] - 0.5) < 0.01
    assert meter.relative(costs)["latency"] < 1, (costs, meter.unpruned)  # about 0.5 on an idle machine
