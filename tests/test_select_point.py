"""select_and_extract's choice of a Pareto point, on a hand-made Pareto set whose answers are worked out by hand."""

import json

import pytest

from nas_llm.common.errors import UsageError
from select_and_extract import SelectionArguments, recorded_data_flags, select_point

# Cheapest first, as the search writes it. The unpruned network's validation error is 0.20.
PARETO_SET = [
    {"params": 0.25, "flops": 0.20, "latency_ms": 2.0, "error": 0.40},
    {"params": 0.50, "flops": 0.45, "latency_ms": 3.0, "error": 0.30},
    {"params": 0.60, "flops": 0.65, "latency_ms": 5.0, "error": 0.24},
    {"params": 0.80, "flops": 0.70, "latency_ms": 4.0, "error": 0.21},
]
RESULTS = {"pareto_set": PARETO_SET, "unpruned": {"validation": {"error": 0.20}}}


def select(**flags) -> int:
    return select_point(RESULTS, SelectionArguments(results="results_rte.json", **flags))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"pareto_index": 0}, 0),
        ({"pareto_index": 3}, 3),
        ({"max_params": 0.5}, 1),  # a budget met exactly counts: 0.50 <= 0.5
        ({"max_params": 0.7}, 2),  # the lowest error among the points within it
        ({"max_flops": 0.65}, 2),
        ({"max_flops": 0.69}, 2),
        ({"max_latency_ms": 4.0}, 3),  # latency is not monotone in params: 0.80 params runs in 4 ms
        ({"max_latency_ms": 3.5}, 1),
        ({"max_params": 0.7, "max_latency_ms": 4.5}, 1),  # every budget holds at once
        ({"max_relative_error_increase": 0.25}, 2),  # error <= 0.20 * 1.25 = 0.25: the cheapest such point
        ({"max_relative_error_increase": 0.05}, 3),  # error <= 0.21 (0.21 exactly: within)
        ({"max_relative_error_increase": 0.5, "max_params": 0.55}, 1),  # error <= 0.30 and params <= 0.55
    ],
)
def test_selection_flags_pick_the_hand_computed_point(flags, expected):
    assert select(**flags) == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"pareto_index": 4}, r"^--pareto_index must be in \[0, 3\], got 4"),
        ({"pareto_index": -1}, r"^--pareto_index must be in \[0, 3\], got -1"),
        ({"max_params": 0.2}, r"^no Pareto-optimal sub-network meets the budget \(the cheapest Pareto points have "
                              r"params 0.25\); relax it or pass --pareto_index"),
        ({"max_params": 0.2, "max_latency_ms": 1.0}, r"have params 0.25, latency_ms 2\); relax"),
        ({"max_relative_error_increase": 0.01}, r"meets the budget; relax it"),
        ({"max_relative_error_increase": 0.1, "max_params": 0.7}, r"have params 0.25\); relax"),
        ({}, r"^choose a sub-network: --pareto_index, or a budget such as --max_params 0.5"),
    ],
)
def test_a_budget_no_point_meets_says_what_to_relax(flags, message):
    with pytest.raises(UsageError, match=message):
        select(**flags)


def test_an_empty_pareto_set_is_an_error_naming_the_file():
    with pytest.raises(UsageError, match="^results_rte.json has an empty Pareto set$"):
        select_point({"pareto_set": []}, SelectionArguments(results="results_rte.json", max_params=1.0))


def test_data_flags_default_to_the_search_s(tmp_path):
    data = {"task_name": "rte", "data_dir": "/glue", "max_test_samples": 5}
    # stand-ins for results files: load_results (nas_llm/search/results.py) refuses a file without evaluations
    with_settings, task_only = tmp_path / "with_settings.json", tmp_path / "task_only.json"
    with_settings.write_text(json.dumps({"settings": {"data": data}, "task_name": "sst2", "evaluations": []}))
    task_only.write_text(json.dumps({"task_name": "sst2", "evaluations": []}))
    assert recorded_data_flags(["--max_params", "0.5", "--results", str(with_settings)]) == data
    assert recorded_data_flags([f"--results={task_only}"]) == {"task_name": "sst2"}
    assert recorded_data_flags(["--results", str(tmp_path / "missing.json")]) == {}
    assert recorded_data_flags(["--max_params", "0.5"]) == {}


def test_error_budget_takes_the_fewest_parameters_within_it_whatever_the_order_of_the_pareto_set():
    """Error limit 0.25 * (1 + 0.5) = 0.375 exactly (binary fractions): a point at the limit is within it. The set is
    ordered by MACs (a search with --objective flops), so the fewest parameters is not the first candidate."""
    pareto_set = [
        {"params": 0.50, "flops": 0.30, "latency_ms": 2.0, "error": 0.5},
        {"params": 0.70, "flops": 0.40, "latency_ms": 3.0, "error": 0.375},
        {"params": 0.60, "flops": 0.50, "latency_ms": 4.0, "error": 0.25},
    ]
    results = {"pareto_set": pareto_set, "unpruned": {"validation": {"error": 0.25}}}
    args = SelectionArguments(results="results_rte.json", max_relative_error_increase=0.5)
    assert select_point(results, args) == 2
    pareto_set[2]["params"] = 0.8
    assert select_point(results, args) == 1


def test_help_is_left_to_the_full_parser():
    """Reading the recorded data flags must not answer --help itself (with only --results in it)."""
    assert recorded_data_flags(["--help"]) == {}
