"""The GLUE study's analysis: which sub-network a budget selects, relative performance, the generated report."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from study_glue import (  # noqa: E402
    BENCHMARKS_BEGIN,
    BENCHMARKS_END,
    BUDGETS,
    best_under_budget,
    hypervolumes,
    mean_over_seeds,
    relative_performance,
    replace_between_markers,
)


def point(error: float, layer_params: int, test_accuracy: float) -> dict:
    return {"error": error, "num_layer_parameters": layer_params, "params": 0.5 + layer_params / 200,
            "test": {"accuracy": test_accuracy}}


def test_budget_selects_the_best_validation_point_within_the_encoder_budget():
    points = [point(0.10, 90, 0.91), point(0.20, 50, 0.70), point(0.15, 60, 0.80), point(0.20, 40, 0.75)]
    assert best_under_budget(points, 0.5, 100) is points[3]  # tie on error: the smaller one
    assert best_under_budget(points, 0.6, 100) is points[2]  # the test metric plays no part
    assert best_under_budget(points, 0.3, 100) is None


def test_relative_performance_is_raw_and_normalised_against_the_trivial_predictor():
    # MRPC dev: "always paraphrase" scores F1 0.812, a fine-tuned MiniLM 0.842
    relative = relative_performance(0.812, 0.842, 0.812)
    assert relative["raw"] > 0.96 and relative["normalised"] == 0.0
    assert math.isclose(relative_performance(0.827, 0.842, 0.812)["normalised"], 0.5)
    assert math.isnan(relative_performance(0.5, 0.5, 0.5)["normalised"])


def test_hypervolume_of_one_point_is_its_dominated_rectangle():
    hv = hypervolumes([point(0.2, 100, 0.7)], "accuracy")  # params 1.0: on the reference, nothing dominated
    assert hv == {"validation": 0.0, "test": 0.0}
    single = {"error": 0.2, "params": 0.5, "num_layer_parameters": 0, "test": {"accuracy": 0.7}}
    hv = hypervolumes([single], "accuracy")
    assert math.isclose(hv["validation"], 0.8 * 0.5) and math.isclose(hv["test"], 0.7 * 0.5)


def test_report_replaces_only_its_block_in_benchmarks_md(tmp_path):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nhand-written\n")
    replace_between_markers(benchmarks, "first\n")
    replace_between_markers(benchmarks, "second\n")
    text = benchmarks.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n")
    assert f"{BENCHMARKS_BEGIN}\nsecond\n{BENCHMARKS_END}" in text and "first" not in text


def test_seeds_of_one_search_are_averaged_row_by_row():
    def row(test: float, hv: float) -> dict:
        cell = {"test": test, "normalised": test, "raw": test, "validation_error": 0.1, "encoder_fraction": 0.5,
                "total_fraction": 0.7}
        budgets = {str(budget): cell for budget in BUDGETS} | {"0.3": None}
        return {"budgets": budgets, "hypervolume": {"validation": hv, "test": hv}}

    methods = {"morea on one_shot (seed 0)": row(0.8, 0.3), "morea on one_shot (seed 1)": row(0.6, 0.5),
               "layer dropping (standard)": row(0.5, 0.1)}
    means = mean_over_seeds(methods)
    assert list(means) == ["morea on one_shot (mean of 2 seeds)"]
    mean = means["morea on one_shot (mean of 2 seeds)"]
    assert math.isclose(mean["budgets"]["0.5"]["test"], 0.7) and mean["budgets"]["0.3"] is None
    assert math.isclose(mean["hypervolume"]["validation"], 0.4)
