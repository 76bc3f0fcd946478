"""The importance-shaped space: layers and units kept by one importance ranking over all layers (hand-computed)."""

import re

import numpy as np
import pytest
import torch
from support import tiny_config
from syne_tune.config_space import OrdinalNearestNeighbor
from tiny_assets import write_tiny_model_dir, write_tiny_rte

import train_supernet
from nas_llm.common.errors import UsageError
from nas_llm.model.search_spaces import IMPORTANCE_SHARES, make_search_space
from nas_llm.model.unit_ranking import UnitScores, counts_within_global_share, most_important_layers, share_of_total
from nas_llm.training.importance import UnitImportance
from nas_llm.training.reorder import report_importance, unit_scores

# 3 layers, 4 head units, 20 neurons (tiny_config); every row most important first
HEADS = torch.tensor([[9.0, 1.0, 0.5, 0.1], [8.0, 7.0, 6.0, 0.2], [3.0, 2.0, 0.3, 0.0]])
NEURONS = torch.stack([torch.linspace(1.0, 0.05, 20), torch.linspace(4.0, 2.1, 20), torch.linspace(0.5, 0.0, 20)])


def space():
    return make_search_space("importance", tiny_config("bert"), UnitScores(HEADS, NEURONS))


def test_units_of_the_kept_layers_are_ranked_together():
    # heads of all layers: 9, 8, 7, 6, 3, 2, 1, ... -> the top 6 (half of 12) are 1 of layer 0, 3 of 1, 2 of 2
    assert counts_within_global_share(HEADS, [0, 1, 2], 0.5) == [1, 3, 2]
    # layers 0 and 2 only: 9, 3, 2, 1, ... -> the top 4 of 8
    assert counts_within_global_share(HEADS, [0, 2], 0.5) == [2, 0, 2]
    ties = torch.ones(2, 3)  # on a tie the earlier layer, then the earlier unit
    assert counts_within_global_share(ties, [0, 1], 0.5) == [3, 0]
    many_ties = torch.ones(2, 64)  # long enough for an unstable sort to mix the layers
    assert counts_within_global_share(many_ties, [0, 1], 0.5) == [64, 0]


def test_layers_are_kept_by_their_share_of_head_and_neuron_importance():
    # head shares: 10.6, 21.2, 5.3 of 37.1; neuron shares: 10.5, 61, 5 of 76.5 -> layer 1, then 0, then 2
    scores = UnitScores(HEADS, NEURONS)
    assert most_important_layers(scores.layer_scores(), 1) == [1]
    assert most_important_layers(scores.layer_scores(), 2) == [0, 1]
    assert most_important_layers(torch.zeros(3), 2) == [0, 1]


def test_a_layer_s_score_is_its_share_of_all_head_importance_plus_its_share_of_all_neuron_importance():
    # head sums 4 and 1 of 5 (0.8, 0.2); neuron sums 20 and 100 of 120 (1/6, 5/6)
    scores = UnitScores(torch.tensor([[3.0, 1.0], [1.0, 0.0]]), torch.tensor([[10.0, 10.0], [50.0, 50.0]]))
    torch.testing.assert_close(scores.layer_scores(), torch.tensor([0.8 + 1 / 6, 0.2 + 5 / 6]))
    # shares of a total below 1, and of nothing: equal shares
    torch.testing.assert_close(share_of_total(torch.tensor([0.2, 0.6])), torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(share_of_total(torch.zeros(4)), torch.full((4,), 0.25))
    no_head_scores = UnitScores(torch.zeros(2, 2), torch.tensor([[10.0, 10.0], [50.0, 50.0]]))
    torch.testing.assert_close(no_head_scores.layer_scores(), torch.tensor([0.5 + 1 / 6, 0.5 + 5 / 6]))


def test_a_config_keeps_prefixes_of_the_most_important_layers_whose_widths_differ():
    sub_network = space().to_sub_network({"num_layers": 2, "head_share": 0.5, "neuron_share": 0.25})
    # layers 0 and 1: heads 9, 8, 7, 6 | 1, ...: the top 4 of 8 are 1 of layer 0 and 3 of layer 1
    assert sub_network.head_mask.sum(1).tolist() == [1, 3, 0]
    # neurons: layer 1's smallest (2.1) beats layer 0's largest (1.0): the top 10 of 40 are all layer 1's
    assert sub_network.ffn_mask.sum(1).tolist() == [0, 10, 0]
    for mask in (sub_network.head_mask, sub_network.ffn_mask):  # kept units are a prefix of each layer
        assert torch.equal(mask, torch.sort(mask.int(), dim=1, descending=True, stable=True).values.bool())


def test_configs_round_trip_and_the_initial_design_spans_the_sizes():
    importance_space, rng = space(), np.random.default_rng(0)
    for _ in range(30):
        sub_network = importance_space.to_sub_network(importance_space.sample_config(rng))
        assert importance_space.to_sub_network(importance_space.to_config(sub_network)) == sub_network
    largest, smallest, mid = (importance_space.to_sub_network(config) for config in importance_space.initial_design())
    assert largest == importance_space.largest()
    assert smallest.head_mask.sum() + smallest.ffn_mask.sum() == 1  # 5% of layer 1's 4 heads is 0, of 20 neurons 1
    assert mid.head_mask.sum() == 6 and mid.ffn_mask.sum() == 30


def test_a_sub_network_off_the_ranking_is_refused():
    uniform = make_search_space("small", tiny_config("bert")).to_sub_network(
        {"num_layers": 3, "num_heads": 2, "num_units": 10}
    )  # two heads in every layer: layer 1's 7 outranks layer 0's 1
    with pytest.raises(UsageError, match="cannot be expressed in the 'importance' search space: its layers and "
                       "widths are not those of one depth and two shares of the units ranked by importance"):
        space().to_config(uniform)


def test_depth_goes_down_to_no_layer_and_the_shares_are_ordinal_neighbours():
    config_space = space().config_space
    assert (config_space["num_layers"].lower, config_space["num_layers"].upper) == (0, 3)
    for key in ("head_share", "neuron_share"):  # local search and the BO searchers step to the next share
        assert isinstance(config_space[key], OrdinalNearestNeighbor)
        assert config_space[key].categories == [step / 20 for step in range(1, 21)]


def test_the_smallest_sub_network_is_the_smallest_with_a_layer():
    config = tiny_config("bert")
    config.num_attention_heads = 16  # enough heads for 5% and 10% of them to differ
    heads, neurons = (torch.rand(3, units, generator=torch.Generator().manual_seed(0)).sort(1, descending=True).values
                      for units in (16, 20))
    importance_space = make_search_space("importance", config, UnitScores(heads, neurons))
    every_config = [{"num_layers": layers, "head_share": head, "neuron_share": neuron}
                    for layers in range(1, 4) for head in IMPORTANCE_SHARES for neuron in IMPORTANCE_SHARES]
    units = [(int(sub_network.head_mask.sum()), int(sub_network.ffn_mask.sum()))
             for sub_network in map(importance_space.to_sub_network, every_config)]
    smallest = importance_space.smallest()
    assert (int(smallest.head_mask.sum()), int(smallest.ffn_mask.sum())) == min(units) == (1, 1)


def test_the_space_needs_importance_stored_most_important_first():
    with pytest.raises(UsageError, match="^the 'importance' search space needs the importance of the super-network's "
                       r"units: train it with --reorder_units importance \(it writes unit_importance.json\)$"):
        make_search_space("importance", tiny_config("bert"))
    for heads, neurons in ((HEADS[:2], NEURONS), (HEADS, NEURONS[:, :10])):  # either one off the model's shape
        with pytest.raises(ValueError, match="^the unit importance scores do not have the super-network's dimensions$"):
            make_search_space("importance", tiny_config("bert"), UnitScores(heads, neurons))
    with pytest.raises(ValueError, match="^heads scores .* most important first"):
        UnitScores(HEADS.flip(1), NEURONS)
    with pytest.raises(ValueError, match=re.escape(
            "neurons scores must be [layers, units], most important first in each layer: the super-network stores its "
            "units in importance order (--reorder_units importance)") + "$"):
        UnitScores(HEADS, NEURONS.flip(1))
    with pytest.raises(ValueError, match="^heads scores"):  # a rise after the first unit, still below it
        UnitScores(torch.tensor([[5.0, 1.0, 2.0]]), torch.ones(1, 3))
    UnitScores(torch.ones(2, 4), torch.zeros(2, 3))  # ties are in order


def test_a_reordered_checkpoint_s_recorded_scores_come_back_in_the_stored_order(tmp_path):
    # layer 0's head units score 1, 3, 2: stored as units 1, 2, 0 after reordering, so their scores read 3, 2, 1
    importance = UnitImportance(torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([[0.5, 0.0, 2.0, 1.0]]), num_batches=4)
    report_importance(importance, tmp_path, writer=None)
    recorded = unit_scores(None, tmp_path)
    assert recorded.heads.tolist() == [[3.0, 2.0, 1.0]] and recorded.neurons.tolist() == [[2.0, 1.0, 0.5, 0.0]]
    assert unit_scores(None, tmp_path / "never_reordered") is None


def test_training_refuses_the_importance_space_without_importance_ordering(tmp_path):
    model_dir, data_dir = write_tiny_model_dir(tmp_path / "model", "bert"), write_tiny_rte(tmp_path / "glue")
    with pytest.raises(UsageError, match="add --reorder_units importance"):
        train_supernet.main([
            "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
            "--output_dir", str(tmp_path / "never"), "--search_space", "importance",
        ])
    assert not (tmp_path / "never").exists()
