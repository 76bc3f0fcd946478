"""Search spaces and their sub-networks: configs map to sub-networks and back, samples stay within bounds."""

import numpy as np
import pytest
import torch
from support import SPACE_NAMES, make_space, tiny_config
from transformers import AutoModelForSequenceClassification, BertConfig

from nas_llm.common.errors import UsageError
from nas_llm.model.cost import count_parameters
from nas_llm.model.families import ParamAxis, family_for_config
from nas_llm.model.search_spaces import SEARCH_SPACES, ModelShape, make_search_space
from nas_llm.model.sub_network import SubNetwork, keeps_param, unit_index
from nas_llm.search.searchers import IntegerCodec


@pytest.fixture(params=SPACE_NAMES)
def space(request, family_name):
    return make_space(request.param, tiny_config(family_name))


def test_model_shape_counts_kv_groups_as_head_units():
    assert ModelShape.of(tiny_config("bert")) == ModelShape(3, 4, 20)
    assert ModelShape.of(tiny_config("llama")) == ModelShape(3, 2, 20)


def test_config_round_trips_through_sub_network(space):
    rng = np.random.default_rng(0)
    for _ in range(20):
        config = space.sample_config(rng)
        sub_network = space.to_sub_network(config)
        assert space.to_sub_network(space.to_config(sub_network)) == sub_network
        if space.name == "importance":  # shares round to whole units: the smallest depth and shares that give it
            assert all(space.to_config(sub_network)[key] <= config[key] for key in config)
        elif any(sub_network.keeps_layer(layer) for layer in range(sub_network.num_layers)):
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


@pytest.mark.parametrize("name", ["small", "smallpower2", "medium", "layer", "layer_block", "large", "importance"])
def test_mid_holds_about_half_of_the_layer_parameters_of_minilm(name):
    """MiniLM-L6's shape (6 layers, 12 heads, 1536 neurons, hidden 384) on the meta device: no weights."""
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    space = make_space(name, config)
    # attention holds 4 * 384^2 weights per layer, the FFN 2 * 384 * 1536: half of each is half of the layer,
    # up to biases and layer norms (layer, layer_block: 3 of the 6 layers, exactly half)
    fraction = count_parameters(model, space.mid()).layers / count_parameters(model, space.largest()).layers
    assert fraction == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_initial_design_of_minilm_is_in_every_config_space(name):
    """The searchers encode the initial design against the config space: each config must belong to it."""
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    space = make_space(name, config)
    codec = IntegerCodec(space.config_space)
    for design_config in space.initial_design():
        codec.encode(design_config)


SAMPLING_SHAPE = ModelShape(num_layers=3, num_head_units=2, intermediate_size=2)  # few units: every count is drawn


def kept_count_shares(space_name: str, count, samples: int = 3000) -> dict[int, float]:
    """How often `count(sub_network)` takes each value over `samples` draws of the space's own sampler."""
    space, rng = SEARCH_SPACES[space_name](SAMPLING_SHAPE), np.random.default_rng(0)
    counts = [count(space.sample(rng)) for _ in range(samples)]
    return {value: counts.count(value) / samples for value in sorted(set(counts))}


def assert_uniform(shares: dict[int, float], values: range) -> None:
    assert list(shares) == list(values), shares
    assert all(abs(share - 1 / len(values)) < 0.3 / len(values) for share in shares.values()), shares


def test_layer_space_samples_keep_a_uniform_number_of_whole_layers_from_0_to_l_minus_1():
    def kept_layers(sub_network: SubNetwork) -> int:
        assert all(sub_network.head_mask[layer].all() == sub_network.ffn_mask[layer].all() for layer in range(3))
        return int(sub_network.head_mask.all(dim=1).sum())

    assert_uniform(kept_count_shares("layer", kept_layers), range(3))
    per_layer = kept_count_shares("layer", lambda sub_network: sub_network.keeps_layer(2))
    assert abs(per_layer[True] - 1 / 3) < 0.05  # each layer is kept alike: (0 + 1 + 2) / 3 of 3 layers


def test_layer_block_space_samples_keep_a_uniform_number_of_blocks_from_0_to_2l_minus_1():
    def kept_blocks(sub_network: SubNetwork) -> int:
        return int(sub_network.head_mask.all(dim=1).sum() + sub_network.ffn_mask.all(dim=1).sum())

    assert_uniform(kept_count_shares("layer_block", kept_blocks), range(6))
    for block in ("head_mask", "ffn_mask"):  # attention and FFN blocks of every layer alike: 2.5 of 6 kept
        for layer in (0, 2):
            share = kept_count_shares("layer_block", lambda s, b=block, i=layer: bool(getattr(s, b)[i].any()))[True]
            assert abs(share - 2.5 / 6) < 0.05, (block, layer, share)


def test_large_space_samples_drop_a_uniform_number_of_units_from_1_to_n_minus_1():
    units = 3 * 2 + 3 * 2

    def dropped(sub_network: SubNetwork) -> int:
        return units - int(sub_network.head_mask.sum() + sub_network.ffn_mask.sum())

    assert_uniform(kept_count_shares("large", dropped), range(1, units))


def test_smallpower2_head_counts_are_drawn_alike_on_a_log_scale_by_syne_tune_searchers():
    """Syne Tune's searchers sample the domain itself: 1, 2, 4, 8 and 16 heads about equally often."""
    domain = make_search_space("smallpower2", BertConfig(num_attention_heads=16, hidden_size=64)).config_space
    draws = list(domain["num_heads"].sample(size=4000, random_state=np.random.RandomState(0)))
    assert all(abs(draws.count(heads) / 4000 - 0.2) < 0.04 for heads in (1, 2, 4, 8, 16)), draws


@pytest.mark.parametrize("name, what", [
    ("layer", "each layer must be kept whole or removed"), ("layer_block", "each block must be kept whole or removed"),
])
def test_partly_kept_layers_are_rejected_by_the_layer_spaces_with_the_reason(name, what):
    sub_network = SubNetwork.full(3, 4, 20)
    sub_network.head_mask[1, 0] = False
    message = f"^this sub-network cannot be expressed in the '{name}' search space: {what}$"
    with pytest.raises(UsageError, match=message):
        make_search_space(name, tiny_config("bert")).to_config(sub_network)


ALL_HEADS, ALL_NEURONS = [0, 1, 2, 3], list(range(20))


@pytest.mark.parametrize("name, heads, neurons, what", [
    ("small", [[], ALL_HEADS, ALL_HEADS], [[], ALL_NEURONS, ALL_NEURONS], "kept layers must be a prefix"),
    ("small", [ALL_HEADS, [0, 1, 2], ALL_HEADS], [ALL_NEURONS] * 3,
     "all kept layers must keep the same number of heads and neurons"),
    ("small", [[1, 2, 3]] * 3, [ALL_NEURONS] * 3, "heads and neurons must be prefixes"),
    ("medium", [ALL_HEADS, [1], ALL_HEADS], [ALL_NEURONS] * 3, "layer 1 keeps heads or neurons that are not a prefix"),
    ("medium", [ALL_HEADS] * 3, [ALL_NEURONS, ALL_NEURONS, [5]],
     "layer 2 keeps heads or neurons that are not a prefix"),
])
def test_sub_networks_outside_a_space_are_rejected_with_the_reason(name, heads, neurons, what):
    message = f"^this sub-network cannot be expressed in the '{name}' search space: {what}$"
    with pytest.raises(UsageError, match=message):
        make_search_space(name, tiny_config("bert")).to_config(hand_built(heads, neurons))


def test_small_space_records_no_layer_with_the_smallest_head_and_neuron_counts():
    no_layer = hand_built([[], [], []], [[], [], []])
    assert make_search_space("small", tiny_config("bert")).to_config(no_layer) == {
        "num_layers": 0, "num_heads": 1, "num_units": 1,
    }


def test_medium_space_samples_can_drop_a_layer_s_attention_or_its_ffn():
    space, rng = make_search_space("medium", tiny_config("bert")), np.random.default_rng(0)
    samples = [space.sample(rng) for _ in range(300)]
    assert any(not sub_network.keeps_attention(layer) for sub_network in samples for layer in range(3))
    assert any(not sub_network.keeps_ffn(layer) for sub_network in samples for layer in range(3))


def test_a_domain_without_a_sampler_is_named():
    from syne_tune.config_space import uniform

    from nas_llm.model.search_spaces import _sample_domain

    with pytest.raises(TypeError, match="^no sampler for domain"):
        _sample_domain(uniform(0.0, 1.0), np.random.default_rng(0))


def test_large_space_rejects_a_sub_network_of_another_model_instead_of_truncating_it():
    large = make_search_space("large", tiny_config("bert"))
    with pytest.raises(ValueError, match="zip"):
        large.to_config(SubNetwork.full(2, 4, 20))


def test_a_sub_network_file_with_fewer_neuron_lists_than_head_lists_is_rejected():
    """A hand-edited or truncated sub_network.json fails to load instead of silently dropping a layer's FFN."""
    data = SubNetwork.full(3, 4, 20).to_json_dict()
    data["kept_neurons"] = data["kept_neurons"][:2]
    with pytest.raises(ValueError, match="zip"):
        SubNetwork.from_json_dict(data)


# SubNetwork's own contracts: which parameters of a layer survive, and when a sub-network is the full network.

def without_ffn_of_layer(layer: int) -> SubNetwork:
    sub_network = SubNetwork.full(3, 4, 20)
    ffn_mask = sub_network.ffn_mask.clone()
    ffn_mask[layer] = False
    return SubNetwork(sub_network.head_mask, ffn_mask)


def test_a_sub_network_missing_only_neurons_is_not_full():
    assert SubNetwork.full(3, 4, 20).is_full()
    assert not without_ffn_of_layer(1).is_full()


def test_parameters_of_a_dropped_block_do_not_survive_in_that_layer_only():
    sub_network = without_ffn_of_layer(1)
    head_mask = sub_network.head_mask.clone()
    head_mask[2] = False
    sub_network = SubNetwork(head_mask, sub_network.ffn_mask)
    assert [keeps_param(sub_network, layer, ParamAxis.NEURON) for layer in range(3)] == [True, False, True]
    assert [keeps_param(sub_network, layer, ParamAxis.FFN_BLOCK) for layer in range(3)] == [True, False, True]
    assert [keeps_param(sub_network, layer, ParamAxis.HEAD) for layer in range(3)] == [True, True, False]
    assert [keeps_param(sub_network, layer, ParamAxis.ATTENTION_BLOCK) for layer in range(3)] == [True, True, False]


def test_block_axes_have_no_unit_index():
    """Whole blocks are kept or dropped (keeps_param); asking for their unit indices is a programming error."""
    config = tiny_config("bert")
    with pytest.raises(ValueError, match="^unknown axis ParamAxis.FFN_BLOCK$"):
        unit_index(family_for_config(config), config, torch.tensor([0]), ParamAxis.FFN_BLOCK)


@pytest.mark.parametrize("head_mask, ffn_mask, message", [
    (torch.ones(3, 4, dtype=torch.bool), torch.ones(60, dtype=torch.bool),
     r"^head_mask and ffn_mask must be 2-d: \[num_layers, units\]$"),
    (torch.ones(12, dtype=torch.bool), torch.ones(3, 20, dtype=torch.bool),
     r"^head_mask and ffn_mask must be 2-d: \[num_layers, units\]$"),
    (torch.ones(3, 4, dtype=torch.bool), torch.ones(2, 20, dtype=torch.bool),
     "^head_mask has 3 layers but ffn_mask has 2$"),
])
def test_masks_of_the_wrong_shape_are_rejected_with_their_shapes(head_mask, ffn_mask, message):
    with pytest.raises(ValueError, match=message):
        SubNetwork(head_mask, ffn_mask)


def test_masks_given_as_numbers_are_stored_as_bool():
    """Importance scores or 0/1 floats from a searcher become the bool masks every user of a SubNetwork indexes with."""
    sub_network = SubNetwork(torch.tensor([[1.0, 0.0]]), torch.tensor([[0, 1, 1]]))
    assert sub_network.head_mask.dtype == sub_network.ffn_mask.dtype == torch.bool
    assert sub_network.kept_heads(0) == [0] and sub_network.kept_neurons(0) == [1, 2]
