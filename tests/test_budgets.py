"""What a budget means: the share of the unpruned model's cost a point keeps, in the measure --budget_on names, and
the validation-best point within it (hand-built points: 60 of the unpruned 100 parameters are embeddings)."""

import json
from pathlib import Path

import pytest

from nas_llm.pipeline.stages import Pipeline, PipelineSettings
from nas_llm.search.budgets import best_under_budget, best_within, size_share

UNPRUNED = {"num_parameters": 100, "num_layer_parameters": 40, "macs": 100, "latency_ms": 10.0}
SMALL = {"error": 0.2, "num_parameters": 70, "num_layer_parameters": 10, "macs": 30, "latency_ms": 3.0}
LARGE = {"error": 0.1, "num_parameters": 90, "num_layer_parameters": 30, "macs": 80, "latency_ms": 9.0}
MID = {"error": 0.1, "num_parameters": 85, "num_layer_parameters": 25, "macs": 70, "latency_ms": 8.0}
POINTS = [SMALL, LARGE, MID]


@pytest.mark.parametrize(("budget_on", "share"), [
    ("encoder", 25 / 40), ("params", 85 / 100), ("flops", 70 / 100), ("latency", 8 / 10),
])
def test_a_point_s_share_is_its_cost_over_the_unpruned_cost_in_the_measure_named(budget_on, share):
    assert size_share(MID, budget_on, UNPRUNED) == pytest.approx(share)


@pytest.mark.parametrize(("budget", "budget_on", "best"), [
    (0.5, "encoder", SMALL),  # 20 layer parameters: only SMALL's 10
    (0.8, "encoder", LARGE),  # all fit; LARGE and MID tie on error, LARGE is larger
    (0.7, "params", SMALL),  # 70 of 100 parameters: the embeddings alone are 60
    (0.88, "params", MID),
    (0.75, "flops", MID),
    (0.5, "latency", SMALL),
    (0.2, "latency", None),  # nothing is that fast
])
def test_the_best_point_within_a_budget_has_the_lowest_error_then_the_largest_size(budget, budget_on, best):
    assert best_within(POINTS, budget, budget_on, UNPRUNED) is best


def test_rfp_s_candidate_keeps_the_smallest_of_tied_points():
    assert best_within(POINTS, 0.8, "encoder", UNPRUNED, larger_on_tie=False) is MID


def test_the_study_s_budget_is_the_share_of_the_unpruned_layers_parameters():
    points = [{"error": 0.1, "num_layer_parameters": 90}, {"error": 0.2, "num_layer_parameters": 50},
              {"error": 0.15, "num_layer_parameters": 60}, {"error": 0.2, "num_layer_parameters": 40}]
    assert best_under_budget(points, 0.5, 100) is points[1]  # 50 and 40 fit, tied on error: the larger
    assert best_under_budget(points, 0.6, 100) is points[2]
    assert best_under_budget(points, 0.3, 100) is None


@pytest.mark.parametrize("sizes_from", ["search", "supernet"])
def test_a_budget_on_all_parameters_becomes_rfp_s_budget_on_the_layers(tmp_path: Path, sizes_from: str):
    """The unpruned sizes come from the search's results, or before the search (RFP seeding it) from the
    super-network's."""
    if sizes_from == "search":
        (tmp_path / "search").mkdir()
        (tmp_path / "search" / "results_rte.json").write_text(json.dumps({"unpruned": UNPRUNED}))
    else:
        (tmp_path / "supernet").mkdir()
        (tmp_path / "supernet" / "results.json").write_text(json.dumps(
            {"num_parameters": UNPRUNED["num_parameters"], "num_layer_parameters": UNPRUNED["num_layer_parameters"]}))
    settings = PipelineSettings("model", "rte", [0.5, 0.8, 0.9], tmp_path, budget_on="params")
    # 0.8 of 100 parameters leaves 80 - 60 = 20 of the 40 layer parameters; 0.5 is below the embeddings alone
    assert Pipeline(settings).rfp_budgets() == ("params", [0.5, 0.75])
    for budget_on, constraint in (("encoder", "params"), ("flops", "flops"), ("latency", "flops")):
        settings = PipelineSettings("model", "rte", [0.3, 0.6], tmp_path, budget_on=budget_on)
        assert Pipeline(settings).rfp_budgets() == (constraint, [0.3, 0.6])
