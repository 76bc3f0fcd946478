"""bench/bench_searchers.py: the hypervolume curves it draws (hand-computed) and one small run of two searchers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_searchers  # noqa: E402

from nas_llm.common.errors import UsageError  # noqa: E402
from nas_llm.search.pareto import hypervolume_2d  # noqa: E402


def test_the_curve_is_the_hypervolume_of_the_fully_scored_sub_networks_so_far():
    evaluations = [
        {"error": 0.5, "params": 0.5},  # an exact search's record: fully scored
        {"error": 0.1, "params": 0.2, "fidelity": 0.1},  # stopped: its error is an estimate, left out
        {"error": 0.3, "params": 0.6, "fidelity": 1.0},
        {"error": 0.6, "params": 0.7, "fidelity": 1.0},  # dominated: adds nothing
    ]
    # (0.5, 0.5): 0.5 x 0.5; then (0.3, 0.6) adds (1 - 0.3) x (1 - 0.6) - the overlap 0.5 x 0.4
    assert bench_searchers.hypervolume_curve(evaluations, "params") == pytest.approx([0.25, 0.25, 0.33, 0.33])


def test_the_search_loop_seconds_leave_out_loading():
    results = {"model_loading_time_s": 3.0, "data_loading_time_s": 1.0,
               "evaluations": [{"runtime_s": 5.0}, {"runtime_s": 7.5}]}
    assert bench_searchers.loop_seconds(results) == [1.0, 3.5]


def test_summary_holds_mean_and_range_over_seeds_at_each_count_reached():
    curves = [[0.1 * step for step in range(1, 31)], [0.05 * step for step in range(1, 31)]]
    seconds = [[float(step) for step in range(1, 31)], [2.0 * step for step in range(1, 31)]]
    summary = bench_searchers.summarise(curves, seconds)
    assert list(summary) == ["10", "25"]  # 50 evaluations were not reached
    assert summary["10"] == pytest.approx({"mean": 0.75, "min": 0.5, "max": 1.0, "seconds": 15.0})


def test_two_searchers_on_a_tiny_super_network(tmp_path, trained_bert):
    model_dir, data_dir, checkpoint = trained_bert
    bench_searchers.main([
        "--output_dir", str(tmp_path), "--searchers", "random_search", "local_search", "--seeds", "0", "1",
        "--num_samples", "10", "--", "--model_name_or_path", str(model_dir), "--task_name", "rte",
        "--data_dir", str(data_dir), "--checkpoint_dir_model", str(checkpoint), "--search_space", "small",
        "--cost_seq_len", "16", "--latency_repeats", "1",
    ])
    report = json.loads((tmp_path / "searchers.json").read_text())
    assert (tmp_path / "searchers.png").stat().st_size > 0
    for searcher in ("random_search", "local_search"):
        pareto_hypervolumes = []
        for seed in (0, 1):
            results = json.loads((tmp_path / f"{searcher}_seed{seed}" / "results_rte.json").read_text())
            assert (results["search_strategy"], results["seed"], len(results["evaluations"])) == (searcher, seed, 10)
            pareto_hypervolumes.append(hypervolume_2d(np.array([[point["error"], point["params"]]
                                                                for point in results["pareto_set"]])))
        # after the last evaluation: the hypervolume of the search's own Pareto set, averaged over the seeds
        assert report["hypervolume"][searcher]["10"]["mean"] == pytest.approx(np.mean(pareto_hypervolumes))
        assert report["hypervolume"][searcher]["10"]["min"] == pytest.approx(min(pareto_hypervolumes))


def test_flags_the_script_sets_per_run_are_refused_after_the_separator(tmp_path):
    with pytest.raises(UsageError, match="--seed are set per run"):
        bench_searchers.main(["--output_dir", str(tmp_path), "--", "--seed", "3"])
