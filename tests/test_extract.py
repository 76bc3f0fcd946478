"""Extraction: a genuinely smaller model with the super-network's logits under the sub-network."""

import copy
import json

import numpy as np
import pytest
import torch
from support import FAMILY_NAMES, SPACE_NAMES, make_space, reload_in_fresh_process, tiny_batch, tiny_config, tiny_model
from tiny_assets import tiny_tokenizer
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM

from nas_llm.extraction.extract import extract_sub_network, load_extracted, num_parameters, save_extracted
from nas_llm.model.cost import count_macs, count_parameters, measure_latency
from nas_llm.model.families import family_for, layers_of
from nas_llm.model.mask import masked
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import sliced
from nas_llm.model.sub_network import SubNetwork


def logits_of(model, sub_network=None):
    batch = tiny_batch()
    batch.pop("labels")
    with torch.no_grad():
        if sub_network is None:
            return model(**batch).logits
        with sliced(model, sub_network):
            return model(**batch).logits


def sample_sub_networks(family, space_name):
    space = make_space(space_name, tiny_config(family))
    rng = np.random.default_rng(4)
    return [space.smallest(), space.largest(), space.sample(rng), space.sample(rng)]


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_extracted_model_equals_the_sub_network_and_is_smaller(family_name, space_name):
    model = tiny_model(family_name)
    for sub_network in sample_sub_networks(family_name, space_name):
        extracted = extract_sub_network(model, sub_network)
        assert (logits_of(extracted) - logits_of(model, sub_network)).abs().max() <= 1e-5
        assert num_parameters(extracted) == count_parameters(model, sub_network).total


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_an_extracted_model_keeps_the_super_network_s_dtype(family_name, dtype):
    model = tiny_model(family_name).to(dtype)
    sub_network = make_space("small", tiny_config(family_name)).sample(np.random.default_rng(0))
    extracted = extract_sub_network(model, sub_network)
    assert {parameter.dtype for parameter in extracted.parameters()} == {dtype}
    assert not extracted.training


def test_uniform_sub_networks_of_llama_are_standard_checkpoints(tmp_path):
    model = tiny_model("llama")
    sub_network = make_search_space("small", model.config).to_sub_network(
        {"num_layers": 2, "num_heads": 1, "num_units": 9}
    )
    kind = save_extracted(extract_sub_network(model, sub_network), tiny_tokenizer(), sub_network, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert kind == "standard" and "auto_map" not in config
    assert (config["num_hidden_layers"], config["num_key_value_heads"], config["num_attention_heads"]) == (2, 1, 2)
    assert config["intermediate_size"] == 9 and config["head_dim"] == 4


def test_fewer_bert_heads_need_custom_code(tmp_path):
    model = tiny_model("bert")
    sub_network = make_search_space("small", model.config).to_sub_network(
        {"num_layers": 3, "num_heads": 2, "num_units": 20}
    )
    extracted = extract_sub_network(model, sub_network)
    kind = save_extracted(extracted, tiny_tokenizer(), sub_network, tmp_path)
    assert kind == "custom_code" and (tmp_path / "modeling_nas_pruned.py").is_file()
    assert SubNetwork.from_json_dict(json.loads((tmp_path / "sub_network.json").read_text())) == sub_network
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith("ForSequenceClassification")
    reloaded = load_extracted(tmp_path)  # in this process too: the custom code, trusted, not the library's BERT
    assert torch.equal(logits_of(reloaded), logits_of(extracted))






@pytest.mark.parametrize("attention_in_every_layer", [True, False])
def test_an_extracted_language_model_generates_with_the_super_networks_settings_and_a_kv_cache(
    attention_in_every_layer,
):
    """Search ran without a cache; the extracted model's generate() gets it back, with the super-network's
    generation settings. A forward without cache positions only builds one if every kept layer attends."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    model.generation_config.max_new_tokens, model.generation_config.use_cache = 3, False
    head_mask = torch.ones(3, 2, dtype=torch.bool)
    head_mask[1] = attention_in_every_layer
    extracted = extract_sub_network(model, SubNetwork(head_mask, torch.ones(3, 20, dtype=torch.bool)))
    settings = extracted.generation_config.to_dict()
    assert settings.pop("use_cache") is True
    expected = model.generation_config.to_dict()
    expected.pop("use_cache")
    assert settings == expected
    assert extracted.config.use_cache is attention_in_every_layer
    assert model.generation_config.use_cache is False  # the super-network's own settings are left alone


def test_a_language_model_with_custom_code_reloads_as_a_causal_lm(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    head_mask = torch.ones(3, 2, dtype=torch.bool)
    head_mask[1] = False  # a layer without attention: not a standard Llama
    sub_network = SubNetwork(head_mask, torch.ones(3, 20, dtype=torch.bool))
    extracted = extract_sub_network(model, sub_network)
    assert save_extracted(extracted, tiny_tokenizer(), sub_network, tmp_path) == "custom_code"
    assert "AutoModelForCausalLM" in json.loads((tmp_path / "config.json").read_text())["auto_map"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)  # through auto_map
    assert type(reloaded).__name__.endswith("ForCausalLM")
    input_ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=input_ids).logits, extracted(input_ids=input_ids).logits)


def standard_sub_network(model):
    """Fewer layers and neurons, and fewer KV groups where the config has head_dim: a standard checkpoint."""
    family = family_for(model)
    heads = family.num_head_units(model.config) // (2 if family.explicit_head_dim else 1)
    config = {"num_layers": 2, "num_heads": heads, "num_units": 9}
    return make_search_space("small", model.config).to_sub_network(config)


@pytest.fixture(scope="session")
def reloaded(tmp_path_factory):
    """Every family x search space (and one standard checkpoint per family), extracted, saved and reloaded in
    ONE fresh process outside this project (cwd elsewhere, no PYTHONPATH): custom code must be self-contained.

    Returns {checkpoint name: expected logits, parameters and checkpoint kind, and what the fresh process saw}.
    """
    root = tmp_path_factory.mktemp("reload")
    batch = tiny_batch()
    batch.pop("labels")
    torch.save(batch, root / "batch.pt")
    expected = {}
    for family in FAMILY_NAMES:
        model = tiny_model(family)
        sub_networks = {
            space_name: make_space(space_name, model.config).sample(np.random.default_rng(7))
            for space_name in SPACE_NAMES
        }
        sub_networks["standard"] = standard_sub_network(model)
        for name, sub_network in sub_networks.items():
            directory = root / "models" / f"{family}-{name}"
            extracted = extract_sub_network(model, sub_network)
            expected[directory.name] = {
                "directory": directory,
                "kind": save_extracted(extracted, tiny_tokenizer(), sub_network, directory),
                "logits": logits_of(model, sub_network),
                "params": count_parameters(model, sub_network).total,
            }
    outputs = reload_in_fresh_process(root / "models", root / "batch.pt")
    return {name: expected[name] | {"reloaded": outputs[name]} for name in expected}


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_saved_checkpoint_reloads_in_a_fresh_process(reloaded, family_name, space_name):
    checkpoint = reloaded[f"{family_name}-{space_name}"]
    assert (checkpoint["reloaded"]["logits"] - checkpoint["logits"]).abs().max() <= 1e-5
    assert checkpoint["reloaded"]["params"] == checkpoint["params"]


def test_standard_checkpoint_reloads_without_remote_code(reloaded, family_name):
    """Loaded by the family's own transformers class, with trust_remote_code=False."""
    checkpoint = reloaded[f"{family_name}-standard"]
    assert checkpoint["kind"] == "standard" and checkpoint["reloaded"]["module"].startswith("transformers.models.")
    assert (checkpoint["reloaded"]["logits"] - checkpoint["logits"]).abs().max() <= 1e-5
    assert checkpoint["reloaded"]["params"] == checkpoint["params"]
    assert num_parameters(load_extracted(checkpoint["directory"])) == checkpoint["params"]


def test_a_sub_network_without_layers_is_the_model_with_its_layers_deleted(family_name):
    """`small` and `layer` allow 0 layers (as the original): embeddings and head alone, on every path."""
    model = tiny_model(family_name)
    empty = make_search_space("small", model.config).to_sub_network({"num_layers": 0, "num_heads": 1, "num_units": 1})
    reference = copy.deepcopy(model)
    for _ in range(len(layers_of(reference))):
        del layers_of(reference)[0]
    reference.config.num_hidden_layers = 0
    if getattr(reference.config, "layer_types", None):
        reference.config.layer_types = []
    expected = logits_of(reference)
    with masked(model, empty):
        assert (logits_of(model) - expected).abs().max() <= 1e-5
    assert (logits_of(model, empty) - expected).abs().max() <= 1e-5
    assert (logits_of(extract_sub_network(model, empty)) - expected).abs().max() <= 1e-5
    assert count_parameters(model, empty).total == num_parameters(reference)
    assert count_parameters(model, empty).layers == 0
    with FlopCounterMode(display=False) as counter:
        reference(input_ids=torch.randint(3, 60, (1, 10)))
    assert counter.get_total_flops() == 2 * count_macs(model, empty, seq_len=10)
    assert measure_latency(model, empty, sliced, batch_size=2, seq_len=8, repeats=1).median_ms > 0
