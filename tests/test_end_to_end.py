"""End to end on a learnable toy task: training learns, the search reports each sub-network's own numbers, and
selection picks what its flags ask for.

Every check compares what the scripts write with a computation made here, apart from the code under test: a
loss or metric from the logits of a plain model, the sub-network extracted from the checkpoint (or built by
hand) and run on its own, torch's FLOP counter, a Pareto front found by brute force. One super-network per task
is trained (and searched) per session and shared by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_runs import EPOCHS, logits_on, main_metric, training_loss
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSequenceClassification

import run_offline_search
import select_and_extract
from nas_llm.extraction.extract import extract_sub_network, num_parameters
from nas_llm.model.families import layers_of
from nas_llm.model.sub_network import SubNetwork

NUM_SAMPLES = 30
SEARCH_SEED = "8"  # its params and flops fronts differ, so the flops search is told from the params one
COST_SEQ_LEN = 16


@pytest.fixture(scope="session")
def searches(toy_classification, tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """objective -> (results JSON, TensorBoard folder) of a random search of the classification super-network."""
    searched = {}
    for objective in ("params", "flops"):
        output_dir = tmp_path_factory.mktemp(f"search_{objective}")
        run_offline_search.main([
            "--model_name_or_path", str(toy_classification.model_dir), *toy_classification.data_flags(),
            "--checkpoint_dir_model", str(toy_classification.supernet), "--search_space", "small",
            "--search_strategy", "random_search", "--num_samples", str(NUM_SAMPLES), "--seed", SEARCH_SEED,
            "--objective", objective, "--output_dir", str(output_dir), "--log_dir", str(output_dir / "tb"),
            "--cost_seq_len", str(COST_SEQ_LEN), "--latency_repeats", "1",
        ])
        searched[objective] = (json.loads((output_dir / "results_custom.json").read_text()), output_dir)
    return searched


# --- independent references ------------------------------------------------------------------------------------


def load(directory: Path):
    return AutoModelForSequenceClassification.from_pretrained(directory).eval()






def prefix_sub_network(heads_per_layer: list[int], neurons_per_layer: list[int], num_heads=4, num_neurons=20):
    """Built by hand: the first k heads and neurons of each layer (the small space's sub-networks)."""
    head_mask = torch.zeros(len(heads_per_layer), num_heads, dtype=torch.bool)
    ffn_mask = torch.zeros(len(neurons_per_layer), num_neurons, dtype=torch.bool)
    for layer, (heads, neurons) in enumerate(zip(heads_per_layer, neurons_per_layer, strict=True)):
        head_mask[layer, :heads] = True
        ffn_mask[layer, :neurons] = True
    return SubNetwork(head_mask, ffn_mask)


SMALLEST = ([1, 0, 0], [1, 0, 0])  # one layer, one head, one neuron: the README's smallest sub-network


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the one TensorBoard run under `log_dir`."""
    (run,) = {path.parent for path in log_dir.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(run))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def brute_force_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point dominates (both objectives minimised); of equal points the first
    (a space with no-layer sub-networks evaluates the same one under several configs)."""
    return {
        i for i, (a, b) in enumerate(points)
        if not any(c <= a and d <= b and (c, d) != (a, b) for c, d in points) and (a, b) not in points[:i]
    }


# --- training --------------------------------------------------------------------------------------------------




def test_training_lowers_the_training_loss_and_changes_every_layer(toy_classification):
    initial, trained = load(toy_classification.model_dir), load(toy_classification.supernet)
    assert training_loss(trained, toy_classification) < 0.8 * training_loss(initial, toy_classification)
    for before, after in zip(layers_of(initial), layers_of(trained), strict=True):
        changed = [not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters(), strict=True)]
        assert all(changed), "a layer's weights were not trained"
    assert not torch.equal(initial.classifier.weight, trained.classifier.weight)


def test_regression_trains_and_reports_its_own_spearman(toy_regression):
    initial, trained = load(toy_regression.model_dir), load(toy_regression.supernet)
    logits, _ = logits_on(trained, toy_regression, "validation")
    assert logits.shape[-1] == 1 and logits.std() > 0.1, "regression predictions are (nearly) constant"
    initial_metric = main_metric(initial, toy_regression, "validation")
    assert main_metric(trained, toy_regression, "validation") > max(0.5, initial_metric)
    assert training_loss(trained, toy_regression) < 0.8 * training_loss(initial, toy_regression)

    results = json.loads((toy_regression.supernet / "results.json").read_text())
    for split in ("validation", "test"):
        assert results[split]["spearmanr"] == pytest.approx(main_metric(trained, toy_regression, split), abs=1e-6)
    smallest = extract_sub_network(trained, prefix_sub_network(*SMALLEST))
    assert results["smallest_sub_network"]["validation"]["spearmanr"] == pytest.approx(
        main_metric(smallest, toy_regression, "validation"), abs=1e-6
    )

    losses = [value for _, value in tensorboard_scalars(toy_regression.log_dir)["train/loss_largest"]]
    steps_per_epoch = len(losses) // EPOCHS
    assert np.mean(losses[-steps_per_epoch:]) < 0.7 * np.mean(losses[:steps_per_epoch])


def test_tensorboard_and_results_report_the_full_and_the_smallest_network(toy_classification):
    trained = load(toy_classification.supernet)
    smallest = extract_sub_network(trained, prefix_sub_network(*SMALLEST))
    expected = {
        "largest": {split: main_metric(trained, toy_classification, split) for split in ("validation", "test")},
        "smallest": {split: main_metric(smallest, toy_classification, split) for split in ("validation", "test")},
    }
    assert expected["largest"]["validation"] != expected["smallest"]["validation"], "the check could not fail"

    scalars = tensorboard_scalars(toy_classification.log_dir)
    for role in ("largest", "smallest"):
        steps, values = zip(*scalars[f"validation/{role}/accuracy"], strict=True)
        assert steps == tuple(range(1, EPOCHS + 1))
        assert values[-1] == pytest.approx(expected[role]["validation"], abs=1e-6), role

    results = json.loads((toy_classification.supernet / "results.json").read_text())
    for split in ("validation", "test"):
        assert results[split]["accuracy"] == pytest.approx(expected["largest"][split])
        assert results["smallest_sub_network"][split]["accuracy"] == pytest.approx(expected["smallest"][split])
    assert results["num_parameters"] == num_parameters(trained)
    assert results["smallest_sub_network"]["num_parameters"] == num_parameters(smallest)


# --- search ----------------------------------------------------------------------------------------------------


def recorded_sub_network(record: dict) -> SubNetwork:
    summary = record["sub_network"]
    if "kept_heads" in summary:  # a Pareto point: the kept indices
        return SubNetwork.from_json_dict(summary)
    return prefix_sub_network(summary["heads_per_layer"], summary["neurons_per_layer"])


def flops_of(model) -> int:
    model.config._attn_implementation = "eager"  # torch counts the attention matmuls only without SDPA
    with FlopCounterMode(display=False) as counter:
        model(input_ids=torch.randint(3, 60, (1, COST_SEQ_LEN)))
    return counter.get_total_flops()


@pytest.mark.parametrize("objective", ["params", "flops"])
def test_search_records_each_sub_network_s_own_error_and_costs(toy_classification, searches, objective):
    """Error, test metric, parameters and FLOPs of the Pareto points and the first evaluations, re-measured on
    the sub-network extracted from the checkpoint."""
    results, _ = searches[objective]
    supernet = load(toy_classification.supernet)
    full_params, full_flops = num_parameters(supernet), flops_of(load(toy_classification.supernet))
    assert results["unpruned"]["validation"]["error"] == pytest.approx(
        1 - main_metric(supernet, toy_classification, "validation"), abs=1e-9
    )
    for record in results["evaluations"][:5] + results["pareto_set"]:
        extracted = extract_sub_network(supernet, recorded_sub_network(record))
        assert record["error"] == pytest.approx(1 - main_metric(extracted, toy_classification, "validation"), abs=1e-9)
        assert record["num_parameters"] == num_parameters(extracted)
        assert record["params"] == pytest.approx(num_parameters(extracted) / full_params)
        flops = flops_of(extracted)
        assert 2 * record["macs"] == flops
        assert record["flops"] == pytest.approx(flops / full_flops)
        if "test" in record:
            assert record["test"]["accuracy"] == pytest.approx(main_metric(extracted, toy_classification, "test"))


@pytest.mark.parametrize("objective", ["params", "flops"])
def test_pareto_set_is_the_brute_force_front_of_the_objective(searches, objective):
    results, _ = searches[objective]
    evaluations = results["evaluations"]
    front = brute_force_front([(e["error"], e[objective]) for e in evaluations])
    assert len(front) >= 3, "a Pareto set of one or two points cannot test selection"
    if objective != "params":
        params_front = brute_force_front([(e["error"], e["params"]) for e in evaluations])
        assert params_front != front, "this run cannot tell the objective from params"
    assert set(results["pareto_indices"]) == front
    assert [p["iteration"] for p in results["pareto_set"]] == sorted(front, key=lambda i: evaluations[i][objective])
    assert results["objectives"] == ["error", objective]


@pytest.mark.parametrize("objective", ["params", "flops"])
def test_search_tensorboard_scalars_are_the_recorded_values(searches, objective):
    results, output_dir = searches[objective]
    scalars = tensorboard_scalars(output_dir / "tb")
    for name in ("error", objective):
        assert scalars[f"search/{name}"] == [
            (index, pytest.approx(record[name])) for index, record in enumerate(results["evaluations"])
        ]


# --- selection -------------------------------------------------------------------------------------------------


def budget_and_expected(results: dict, flag: str) -> tuple[float, int]:
    """A budget that leaves several candidates, and the iteration it must select, from the Pareto set alone."""
    pareto_set = results["pareto_set"]
    if flag == "--pareto_index":
        return 1, pareto_set[1]["iteration"]
    if flag == "--max_relative_error_increase":
        target_error = sorted(point["error"] for point in pareto_set)[len(pareto_set) // 2]
        increase = target_error / results["unpruned"]["validation"]["error"] - 1 + 1e-9
        within = [point for point in pareto_set if point["error"] <= target_error + 1e-12]
        return increase, min(within, key=lambda point: point["params"])["iteration"]
    cost = {"--max_params": "params", "--max_flops": "flops", "--max_latency_ms": "latency_ms"}[flag]
    limit = sorted(point[cost] for point in pareto_set)[len(pareto_set) // 2]
    candidates = [point for point in pareto_set if point[cost] <= limit]
    assert len({point["error"] for point in candidates}) >= 2, "the budget leaves no choice to get wrong"
    return limit, min(candidates, key=lambda point: point["error"])["iteration"]


@pytest.mark.parametrize(
    "flag", ["--pareto_index", "--max_params", "--max_flops", "--max_latency_ms", "--max_relative_error_increase"]
)
def test_selection_extracts_the_point_its_budget_asks_for(toy_classification, searches, tmp_path, flag):
    results, output_dir = searches["params"]
    value, expected_iteration = budget_and_expected(results, flag)
    select_and_extract.main([
        "--results", str(output_dir / "results_custom.json"), flag, repr(value), *toy_classification.data_flags(),
        "--output_dir", str(tmp_path / "pruned"),
    ])
    report = json.loads((tmp_path / "pruned" / "extraction.json").read_text())
    assert report["pareto_point"]["iteration"] == expected_iteration
    expected = next(point for point in results["pareto_set"] if point["iteration"] == expected_iteration)
    assert json.loads((tmp_path / "pruned" / "sub_network.json").read_text()) == expected["sub_network"]
    assert report["matches_search"] and report["num_parameters"] == expected["num_parameters"]
