"""Retraining-free pruning: Fisher mask search under a budget, tuned checkpoints, results read like a search's."""

import json

import pytest
import torch
from test_scripts import train

import plot_pareto
import run_rfp
import select_and_extract
from errors import UsageError
from extract import extract_sub_network, load_extracted, num_parameters
from importance import UnitImportance
from models import load_supernet
from rfp import UnitCosts, search_mask
from sub_network import SubNetwork

BUDGETS = (0.4, 0.6, 0.8)


def test_mask_search_keeps_the_most_important_units_that_fit():
    # 2 layers, 2 head units (cost 10 each), 3 neurons (cost 1 each), nothing fixed: full cost 46.
    importance = UnitImportance(
        torch.tensor([[5.0, 1.0], [0.5, 4.0]]), torch.tensor([[3.0, 0.1, 2.0], [1.0, 0.2, 0.3]]), num_batches=1
    )
    costs = UnitCosts(full=46.0, fixed=0.0, head_unit=10.0, neuron=1.0)
    sub_network = search_mask(importance, costs, 25 / 46)  # by hand: 2 heads (5, 4) + 5 neurons (3, 2, 1, .3, .2)
    assert sub_network.head_mask.tolist() == [[True, False], [False, True]]
    assert sub_network.ffn_mask.tolist() == [[True, False, True], [True, True, True]]
    only_neurons = search_mask(importance, costs, 6 / 46)  # no room for a head: all 6 neurons
    assert not only_neurons.head_mask.any() and only_neurons.ffn_mask.all()
    with pytest.raises(UsageError, match="budget"):
        search_mask(importance, UnitCosts(full=46.0, fixed=30.0, head_unit=10.0, neuron=1.0), 0.5)


def test_rfp_writes_one_tuned_point_per_budget_within_it_and_extraction_takes_its_weights(tmp_path):
    model_dir, data_dir, checkpoint = train(tmp_path, "bert", strategy="standard")
    output_dir = tmp_path / "rfp"
    run_rfp.main([
        "--checkpoint_dir_model", str(checkpoint), "--task_name", "rte", "--data_dir", str(data_dir),
        "--budgets", ",".join(map(str, BUDGETS)), "--num_calibration_samples", "16", "--calibration_batch_size", "8",
        "--cost_seq_len", "16", "--latency_repeats", "1", "--output_dir", str(output_dir),
    ])
    results = json.loads((output_dir / "results_rte.json").read_text())
    assert [point["budget"] for point in results["pareto_set"]] == list(BUDGETS)
    fine_tuned = load_supernet(checkpoint)[0]
    for point in results["pareto_set"]:
        assert point["layer_params"] <= point["budget"]
        untuned = extract_sub_network(fine_tuned, SubNetwork.from_json_dict(point["sub_network"])).state_dict()
        tuned = load_extracted(point["trial_checkpoint_dir"]).state_dict()  # this budget's tuned, extracted model
        assert tuned.keys() == untuned.keys()
        assert all(tuned[name].shape == untuned[name].shape for name in tuned)
        assert not all(torch.equal(tuned[name], untuned[name]) for name in tuned)  # the scales are in the weights
    plot_pareto.main([str(output_dir / "results_rte.json"), "--output", str(tmp_path / "pareto.png")])
    assert (tmp_path / "pareto.png").stat().st_size > 0

    extracted_dir = tmp_path / "pruned"
    select_and_extract.main(["--results", str(output_dir / "results_rte.json"), "--pareto_index", "1",
                             "--output_dir", str(extracted_dir)])
    report = json.loads((extracted_dir / "extraction.json").read_text())
    assert report["matches_search"]  # the copied checkpoint scores what run_rfp.py recorded: the tuned weights
    assert report["num_parameters"] == results["pareto_set"][1]["num_parameters"]
    assert num_parameters(load_extracted(extracted_dir)) == report["num_parameters"]


def test_bad_budgets_are_refused(tmp_path):
    with pytest.raises(UsageError, match="--budgets"):
        run_rfp.main(["--checkpoint_dir_model", str(tmp_path), "--task_name", "rte", "--budgets", "0.5,1.5"])
