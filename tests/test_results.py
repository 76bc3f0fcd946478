"""The results format (nas_llm/search/results.py): what a run writes, what a reader gets back, when a run resumes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from nas_llm.common.errors import UsageError
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.results import (
    LOG_FILE,
    REQUIRED_KEYS,
    SETTINGS_FILE,
    evaluated_point,
    finished_results,
    is_full_fidelity,
    load_results,
    pareto_front,
    previous_evaluations,
    results_file_name,
    write_results,
)

SETTINGS = {"num_samples": 3, "seed": 1, "search_strategy": "random_search"}


def write_log(output_dir, records, settings=SETTINGS, partial_line=""):
    (output_dir / LOG_FILE).write_text("".join(json.dumps(record) + "\n" for record in records) + partial_line)
    (output_dir / SETTINGS_FILE).write_text(json.dumps(settings))


def test_results_file_is_named_after_the_task_or_custom():
    assert results_file_name("rte") == "results_rte.json"
    assert results_file_name(None) == "results_custom.json"


@pytest.mark.parametrize(("record", "full"), [({}, True), ({"fidelity": 1.0}, True), ({"fidelity": 0.5}, False)])
def test_only_records_scored_on_the_whole_validation_split_are_full_fidelity(record, full):
    assert is_full_fidelity(record) is full


def dominated(a: dict, b: dict, objectives: list[str]) -> bool:
    """Whether `b` beats `a`: no worse in every objective, better in one (all minimised)."""
    return all(b[name] <= a[name] for name in objectives) and any(b[name] < a[name] for name in objectives)


def test_pareto_front_leaves_out_partly_scored_records_and_orders_by_the_named_objective():
    """A stopped sub-network's error on a share of the data is no comparison: it neither joins the front nor
    pushes a fully scored record off it (its error here beats them all)."""
    records = [
        {"params": 0.9, "error": 0.10},
        {"params": 0.2, "error": 0.50},
        {"params": 0.5, "error": 0.20},
        {"params": 0.6, "error": 0.30},
        {"params": 0.1, "error": 0.00, "fidelity": 0.25},
        {"params": 0.4, "error": 0.40, "fidelity": 1.0},
    ]
    objectives = ["params", "error"]
    full = [index for index in range(len(records)) if index != 4]
    expected = [a for a in full if not any(dominated(records[a], records[b], objectives) for b in full)]
    assert expected == [0, 1, 2, 5]
    assert pareto_front(records, objectives) == expected
    assert pareto_front(records, objectives, order_by="params") == [1, 5, 2, 0]
    assert pareto_front(records, objectives, order_by="error") == [0, 2, 5, 1]


def test_pareto_front_of_three_objectives_matches_a_pairwise_check():
    objectives = ["params", "flops", "error"]
    points = np.random.default_rng(0).random((40, 3))
    records = [dict(zip(objectives, point.tolist(), strict=True)) for point in points]
    expected = [a for a in range(len(records)) if not any(dominated(records[a], b, objectives) for b in records)]
    assert len(expected) > 1
    assert pareto_front(records, objectives) == expected


def complete_results() -> dict:
    return {key: index for index, key in enumerate(REQUIRED_KEYS)}


def test_written_results_read_back_unchanged(tmp_path):
    path = tmp_path / "results_rte.json"
    results = complete_results() | {"method": "rfp"}
    write_results(path, results)
    assert json.loads(path.read_text()) == results
    assert load_results(path) == results


def test_results_lacking_a_key_the_readers_need_are_not_written(tmp_path):
    results = complete_results()
    del results["pareto_set"], results["seed"]
    path = tmp_path / "results_rte.json"
    with pytest.raises(ValueError, match=f"^results for {path} lack seed, pareto_set$"):
        write_results(path, results)
    assert not path.exists()


def test_a_missing_results_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "results_rte.json"
    with pytest.raises(UsageError, match=f"^results file '{path}' does not exist; pass the results_<task>.json"):
        load_results(path)
    with pytest.raises(UsageError, match="does not exist"):
        load_results(tmp_path)  # a folder is not a results file either


def test_a_json_file_without_evaluations_is_not_a_results_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"task_name": "rte"}))
    with pytest.raises(UsageError, match=f"^'{path}' is not a results file of run_offline_search.py"):
        load_results(str(path))


@pytest.mark.parametrize(
    ("logged", "settings", "overwrite", "finished"),
    [
        (3, SETTINGS, False, True),
        (4, SETTINGS, False, True),  # a log may hold more than asked: the search stopped at num_samples anyway
        (2, SETTINGS, False, False),
        (3, SETTINGS | {"seed": 2}, False, False),
        (3, SETTINGS, True, False),
    ],
)
def test_a_search_is_finished_when_its_results_have_its_settings_and_every_evaluation(
    tmp_path, logged, settings, overwrite, finished
):
    results_path = tmp_path / "results_rte.json"
    write_log(tmp_path, [{"iteration": index} for index in range(logged)])
    results_path.write_text(json.dumps({"settings": SETTINGS}))
    assert finished_results(tmp_path, results_path, settings, overwrite) is finished


def test_a_search_without_its_results_file_is_not_finished(tmp_path):
    write_log(tmp_path, [{"iteration": index} for index in range(3)])
    assert not finished_results(tmp_path, tmp_path / "results_rte.json", SETTINGS, overwrite=False)


def test_a_fresh_output_folder_starts_an_empty_log_and_records_the_settings(tmp_path):
    log, records = previous_evaluations(tmp_path, SETTINGS, overwrite=False)
    assert records == []
    assert log.path == tmp_path / LOG_FILE
    assert (tmp_path / LOG_FILE).read_text() == ""
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == SETTINGS


def test_a_run_with_the_same_settings_resumes_from_its_log_without_the_cut_last_line(tmp_path):
    logged = [{"iteration": 0, "error": 0.3}, {"iteration": 1, "error": 0.2}]
    write_log(tmp_path, logged, partial_line='{"iteration": 2, "err')
    log, records = previous_evaluations(tmp_path, SETTINGS, overwrite=False)
    assert records == logged
    log.append({"iteration": 2, "error": 0.1})
    assert log.read() == [*logged, {"iteration": 2, "error": 0.1}]


def test_overwrite_starts_over_and_records_the_new_settings(tmp_path):
    write_log(tmp_path, [{"iteration": 0}], settings=SETTINGS | {"seed": 7})
    log, records = previous_evaluations(tmp_path, SETTINGS, overwrite=True)
    assert records == []
    assert log.read() == []
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == SETTINGS


@pytest.mark.parametrize(
    ("previous", "message"),
    [
        (SETTINGS | {"seed": 7}, "holds a run with --seed 7 (this run: 1)"),
        ({"num_samples": 3, "search_strategy": "random_search"}, "holds a run with --seed None (this run: 1)"),
        (SETTINGS | {"teacher": "bert"}, "holds a run with --teacher bert (this run: None)"),
    ],
)
def test_resuming_a_run_with_other_settings_is_refused_naming_the_flag(tmp_path, previous, message):
    """Also a setting that only one of the two runs has: an older run without a newer flag is not this run."""
    write_log(tmp_path, [{"iteration": 0}], settings=previous)
    expected = (
        f"--output_dir {tmp_path} {message}; repeat its settings to resume it, "
        "or pass another --output_dir or --overwrite_output_dir True"
    )
    with pytest.raises(UsageError, match=f"^{re.escape(expected)}$"):
        previous_evaluations(tmp_path, SETTINGS, overwrite=False)
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == previous  # the earlier run is left as it was


def test_an_evaluated_iteration_reads_back_as_a_pareto_point_with_its_sub_network(tmp_path):
    head_mask = torch.tensor([[True, False, True], [False, False, False]])
    ffn_mask = torch.tensor([[False, True, True, False, True], [True, False, False, False, False]])
    masks = SubNetwork(head_mask, ffn_mask).to_compact()
    write_log(tmp_path, [
        {"iteration": 3, "error": 0.4, "params": 0.5, "sub_network_masks": masks},
        {"iteration": 7, "error": 0.2, "params": 0.6, "sub_network_masks": masks},
        {"iteration": 7, "error": 0.9, "params": 0.9, "sub_network_masks": masks},  # a repeat after a resume
    ])
    point = evaluated_point(tmp_path / "results_rte.json", 7)
    assert point == {
        "iteration": 7, "error": 0.2, "params": 0.6,
        "sub_network": {
            "num_head_units": 3, "intermediate_size": 5,
            "kept_heads": [[0, 2], []], "kept_neurons": [[1, 2, 4], [0]],
        },
    }


def test_an_iteration_the_search_did_not_evaluate_is_refused_naming_the_log(tmp_path):
    write_log(tmp_path, [{"iteration": 0, "sub_network_masks": {}}])
    with pytest.raises(UsageError, match=f"^{tmp_path / LOG_FILE} holds no evaluation of --iteration 5 "):
        evaluated_point(str(tmp_path / "results_rte.json"), 5)
