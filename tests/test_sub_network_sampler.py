"""Budget-aware sampling: parameter counts of random sub-networks spread evenly over the space's range."""

import numpy as np
import pytest
import torch
from support import tiny_model
from transformers import AutoModelForSequenceClassification, BertConfig

from nas_llm.model.cost import count_parameters
from nas_llm.model.search_spaces import make_search_space
from nas_llm.training.sampling import make_sampling_strategy
from nas_llm.training.sub_network_sampler import LayerParameterCounter, ParameterBinSampler, make_sub_network_sampler

SPACE_NAMES = ("small", "smallpower2", "medium", "layer", "layer_block", "large")


def meta_model(config):
    """The model's shapes without its weights."""
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


MINILM = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_counter_equals_count_parameters(family_name, space_name):
    model = tiny_model(family_name)
    space = make_search_space(space_name, model.config)
    counter = LayerParameterCounter(model)
    proposals = ParameterBinSampler(space, counter)
    rng = np.random.default_rng(0)
    sub_networks = [space.smallest(), space.largest(), space.mid()]
    sub_networks += [space.sample(rng) for _ in range(10)] + [proposals.propose(rng) for _ in range(10)]
    for sub_network in sub_networks:
        assert counter(sub_network) == count_parameters(model, sub_network).layers


def layer_parameters(distribution: str, space_name: str, config, num_draws: int) -> tuple[np.ndarray, int, int]:
    """Layer parameters of `num_draws` random sub-networks, of the smallest and of the largest sub-network."""
    model = meta_model(config)
    space = make_search_space(space_name, config)
    counter = LayerParameterCounter(model)
    sampler = make_sub_network_sampler(distribution, space, model)
    rng = np.random.default_rng(0)
    counts = np.array([counter(sampler.sample(rng)) for _ in range(num_draws)])
    smallest = count_parameters(model, space.smallest()).layers
    largest = count_parameters(model, space.largest()).layers
    return counts, smallest, largest


def relative_sizes(distribution: str, space_name: str, config, num_draws: int) -> np.ndarray:
    """Layer parameters of random sub-networks as shares of the range [smallest, largest]."""
    counts, smallest, largest = layer_parameters(distribution, space_name, config, num_draws)
    return (counts - smallest) / (largest - smallest)


def test_minilm_median_sub_network_is_a_quarter_of_the_encoder_uniformly_and_half_by_params(capsys):
    """The median relative size (layer parameters / the full encoder's) under both distributions, `small` space."""
    medians = {}
    for distribution in ("uniform", "params"):
        counts, _, largest = layer_parameters(distribution, "small", MINILM, 1000)
        medians[distribution] = round(float(np.median(counts)) / largest, 3)
    with capsys.disabled():
        print(f"\nMiniLM-L6, small space, median relative size: {medians}")
    assert 0.2 < medians["uniform"] < 0.3
    assert 0.45 < medians["params"] < 0.55


@pytest.mark.parametrize(
    "space_name, config, num_draws",
    [
        *((name, MINILM, 1000) for name in SPACE_NAMES if name not in ("layer", "large")),
        # one bit per neuron: a narrower model keeps the test fast
        ("large", BertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128), 500),
    ],
)
def test_params_distribution_is_uniform_over_the_range(space_name, config, num_draws):
    sizes = np.sort(relative_sizes("params", space_name, config, num_draws))
    assert np.quantile(sizes, [0.25, 0.5, 0.75]) == pytest.approx([0.25, 0.5, 0.75], abs=0.06)
    uniform_cdf = np.arange(1, num_draws + 1) / num_draws
    assert np.max(np.abs(uniform_cdf - sizes)) < 0.1  # Kolmogorov-Smirnov distance to U(0, 1)


def test_params_distribution_draws_every_number_of_layers_equally_often():
    """The `layer` space has only L + 1 sizes; the uniform sampler never draws the full network."""
    sizes = relative_sizes("params", "layer", MINILM, 1400)
    assert sorted(set(np.round(sizes * 6, 6))) == [0, 1, 2, 3, 4, 5, 6]
    assert all(abs(np.mean(np.isclose(sizes * 6, kept)) - 1 / 7) < 0.04 for kept in range(7))


def test_uniform_distribution_is_skewed_small_on_minilm():
    sizes = relative_sizes("uniform", "small", MINILM, 1000)
    assert np.quantile(sizes, 0.5) < 0.3 and np.quantile(sizes, 0.75) < 0.5  # uniform sizes: 0.5 and 0.75
    assert np.mean(sizes > 0.75) < 0.1  # uniform sizes: 0.25


def test_params_sampler_is_seeded_and_feeds_the_sampling_strategy():
    model = tiny_model("bert")
    space = make_search_space("medium", model.config)
    sampler = make_sub_network_sampler("params", space, model)
    strategy = make_sampling_strategy("random", space, 3, sampler=sampler)
    planned = [p.sub_network for p in strategy.plan(0, 1, np.random.default_rng(7))]
    rng = np.random.default_rng(7)
    assert planned == [sampler.sample(rng) for _ in range(3)]
    assert planned != [p.sub_network for p in strategy.plan(0, 1, np.random.default_rng(8))]
