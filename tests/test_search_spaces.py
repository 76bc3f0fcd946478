"""Search spaces: configs map to sub-networks and back, samples stay within bounds."""

import numpy as np
import pytest
import torch
from support import SPACE_NAMES, tiny_config
from transformers import AutoModelForSequenceClassification, BertConfig

from nas_llm.common.errors import UsageError
from nas_llm.model.cost import count_parameters
from nas_llm.model.search_spaces import ModelShape, make_search_space
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.searchers import IntegerCodec


@pytest.fixture(params=SPACE_NAMES)
def space(request, family_name):
    return make_search_space(request.param, tiny_config(family_name))


def test_model_shape_counts_kv_groups_as_head_units():
    assert ModelShape.of(tiny_config("bert")) == ModelShape(3, 4, 20)
    assert ModelShape.of(tiny_config("llama")) == ModelShape(3, 2, 20)


def test_config_round_trips_through_sub_network(space):
    rng = np.random.default_rng(0)
    for _ in range(20):
        config = space.sample_config(rng)
        sub_network = space.to_sub_network(config)
        assert space.to_sub_network(space.to_config(sub_network)) == sub_network
        if any(sub_network.keeps_layer(layer) for layer in range(sub_network.num_layers)):
            assert space.to_config(sub_network) == config  # without layers, heads and neurons say nothing


def test_samples_are_within_the_model(space):
    rng = np.random.default_rng(1)
    shape = space.shape
    for _ in range(20):
        sub_network = space.sample(rng)
        assert sub_network.head_mask.shape == (shape.num_layers, shape.num_head_units)
        assert sub_network.ffn_mask.shape == (shape.num_layers, shape.intermediate_size)
        space.to_config(sub_network)  # every sample is a member of the space


def test_sampler_is_seeded(space):
    first = [space.sample(np.random.default_rng(5)) for _ in range(3)]
    second = [space.sample(np.random.default_rng(5)) for _ in range(3)]
    assert first == second


def test_largest_keeps_everything_and_smallest_keeps_least(space):
    largest, smallest = space.largest(), space.smallest()
    assert largest.is_full()
    space.to_config(largest)
    space.to_config(smallest)
    if space.name == "large":
        return  # the original large-space sampler may keep a single unit, fewer than its smallest
    rng = np.random.default_rng(2)
    for _ in range(20):
        sample = space.sample(rng)
        if not sample.head_mask.any() and not sample.ffn_mask.any():
            continue  # small's sampler may keep no layer, as the original's; its smallest keeps one
        assert smallest.head_mask.sum() + smallest.ffn_mask.sum() <= sample.head_mask.sum() + sample.ffn_mask.sum()


@pytest.mark.parametrize(
    "name, config, heads, neurons",
    [
        ("small", {"num_layers": 2, "num_heads": 3, "num_units": 5}, [3, 3, 0], [5, 5, 0]),
        ("smallpower2", {"num_layers": 1, "num_heads": 2, "num_units": 20}, [2, 0, 0], [20, 0, 0]),
        (
            "medium",
            {"num_heads_0": 0, "num_units_0": 7, "num_heads_1": 4, "num_units_1": 0, "num_heads_2": 1,
             "num_units_2": 1},
            [0, 4, 1],
            [7, 0, 1],
        ),
        ("small", {"num_layers": 0, "num_heads": 4, "num_units": 20}, [0, 0, 0], [0, 0, 0]),
        ("layer", {"layer_0": 1, "layer_1": 0, "layer_2": 1}, [4, 0, 4], [20, 0, 20]),
        (
            "layer_block",
            {"layer_mha_0": 1, "layer_ffn_0": 0, "layer_mha_1": 0, "layer_ffn_1": 0, "layer_mha_2": 0,
             "layer_ffn_2": 1},
            [4, 0, 0],
            [0, 0, 20],
        ),
    ],
)
def test_config_to_masks_matches_the_original_semantics(name, config, heads, neurons):
    sub_network = make_search_space(name, tiny_config("bert")).to_sub_network(config)
    assert sub_network.summary() == {"heads_per_layer": heads, "neurons_per_layer": neurons}
    for layer, count in enumerate(heads):  # prefixes: the first heads are kept
        assert sub_network.kept_heads(layer) == list(range(count))


def test_large_space_has_one_bit_per_head_and_neuron():
    space = make_search_space("large", tiny_config("bert"))
    assert len(space.config_space) == 3 * 4 + 3 * 20
    config = {key: 0 for key in space.config_space} | {"head_1_2": 1, "neuron_0_13": 1}
    sub_network = space.to_sub_network(config)
    assert sub_network.kept_heads(1) == [2] and sub_network.kept_neurons(0) == [13]
    assert int(sub_network.head_mask.sum()) == 1 and int(sub_network.ffn_mask.sum()) == 1


@pytest.mark.parametrize("num_heads, choices", [(4, [1, 2, 4]), (12, [1, 3, 6, 12]), (20, [1, 2, 5, 10, 20])])
def test_smallpower2_offers_the_head_count_halved_down_to_one(num_heads, choices):
    """The original's H / 2^i (rounded down): the full head count is always in the domain."""
    config = tiny_config("bert")
    config.num_attention_heads = num_heads
    space = make_search_space("smallpower2", config)
    assert space.config_space["num_heads"].categories == choices
    space.to_config(space.largest())


def test_small_and_layer_spaces_allow_no_layer_as_the_original():
    assert make_search_space("small", tiny_config("bert")).config_space["num_layers"].lower == 0
    layer = make_search_space("layer", tiny_config("bert"))
    assert sorted(layer.config_space) == ["layer_0", "layer_1", "layer_2"]
    kept_layers = {int(layer.sample(np.random.default_rng(seed)).head_mask.any(dim=1).sum()) for seed in range(50)}
    assert kept_layers == {0, 1, 2}  # the original sampler keeps 0 to L - 1 layers


def test_unknown_space_lists_the_valid_ones():
    with pytest.raises(UsageError, match="small, smallpower2, medium"):
        make_search_space("huge", tiny_config("bert"))


def test_sub_network_json_and_compact_round_trips():
    space = make_search_space("large", tiny_config("bert"))
    for seed in range(5):
        sub_network = space.sample(np.random.default_rng(seed))
        assert SubNetwork.from_json_dict(sub_network.to_json_dict()) == sub_network
        assert SubNetwork.from_compact(sub_network.to_compact()) == sub_network


def test_unrepresentable_sub_network_is_rejected():
    small = make_search_space("small", tiny_config("bert"))
    sub_network = SubNetwork.full(3, 4, 20)
    sub_network.head_mask[1, 0] = False
    with pytest.raises(UsageError, match="small"):
        small.to_config(SubNetwork(sub_network.head_mask, torch.ones(3, 20, dtype=torch.bool)))


def hand_built(heads_per_layer: list[list[int]], neurons_per_layer: list[list[int]]) -> SubNetwork:
    head_mask, ffn_mask = torch.zeros(3, 4, dtype=torch.bool), torch.zeros(3, 20, dtype=torch.bool)
    for layer, (heads, neurons) in enumerate(zip(heads_per_layer, neurons_per_layer, strict=True)):
        head_mask[layer, heads] = True
        ffn_mask[layer, neurons] = True
    return SubNetwork(head_mask, ffn_mask)


@pytest.mark.parametrize(
    "name, heads, neurons",
    [  # the README's smallest sub-networks (the original example's)
        ("small", [[0], [], []], [[0], [], []]),
        ("smallpower2", [[0], [], []], [[0], [], []]),
        ("medium", [[0], [0], [0]], [[0], [0], [0]]),
        ("layer", [[], [], []], [[], [], []]),
        ("large", [[0], [], []], [[0], [], []]),
    ],
)
def test_smallest_sub_network_is_the_original_one(name, heads, neurons):
    assert make_search_space(name, tiny_config("bert")).smallest() == hand_built(heads, neurons)


@pytest.mark.parametrize(
    "name, family, heads, neurons",
    [  # tiny configs: 3 layers, 4 heads (llama: 2 KV groups), 20 neurons
        ("small", "bert", [2, 2, 2], [10, 10, 10]),
        ("smallpower2", "bert", [2, 2, 2], [10, 10, 10]),
        ("medium", "bert", [2, 2, 2], [10, 10, 10]),
        ("large", "bert", [2, 2, 2], [10, 10, 10]),
        ("layer", "bert", [4, 4, 0], [20, 20, 0]),
        ("layer_block", "bert", [4, 4, 0], [20, 20, 0]),
        ("medium", "llama", [1, 1, 1], [10, 10, 10]),
        ("layer", "llama", [2, 2, 0], [20, 20, 0]),
    ],
)
def test_mid_keeps_half_of_every_layer_or_the_bottom_half_of_the_layers(name, family, heads, neurons):
    mid = make_search_space(name, tiny_config(family)).mid()
    assert mid.summary() == {"heads_per_layer": heads, "neurons_per_layer": neurons}
    assert all(mid.kept_heads(layer) == list(range(count)) for layer, count in enumerate(heads))


def test_initial_design_is_largest_smallest_mid_as_configs(space):
    design = space.initial_design()
    assert [space.to_sub_network(config) for config in design] == [space.largest(), space.smallest(), space.mid()]


@pytest.mark.parametrize("name", ["small", "smallpower2", "medium", "layer", "layer_block", "large"])
def test_mid_holds_about_half_of_the_layer_parameters_of_minilm(name):
    """MiniLM-L6's shape (6 layers, 12 heads, 1536 neurons, hidden 384) on the meta device: no weights."""
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    space = make_search_space(name, config)
    # attention holds 4 * 384^2 weights per layer, the FFN 2 * 384 * 1536: half of each is half of the layer,
    # up to biases and layer norms (layer, layer_block: 3 of the 6 layers, exactly half)
    fraction = count_parameters(model, space.mid()).layers / count_parameters(model, space.largest()).layers
    assert fraction == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_initial_design_of_minilm_is_in_every_config_space(name):
    """The searchers encode the initial design against the config space: each config must belong to it."""
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    space = make_search_space(name, config)
    codec = IntegerCodec(space.config_space)
    for design_config in space.initial_design():
        codec.encode(design_config)
