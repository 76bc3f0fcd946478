import math

import numpy as np
import pytest

from nas_llm.common.errors import UsageError
from nas_llm.data.metrics import MAIN_METRIC, compute_task_metrics, metrics_with_error, task_error, trivial_metric


def test_accuracy_and_f1_match_hand_computed_values():
    # tp=2, fp=1, fn=0: precision 2/3, recall 1, f1 = 0.8; 3 of 4 correct.
    metrics = compute_task_metrics("mrpc", np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    assert metrics == pytest.approx({"accuracy": 0.75, "f1": 0.8})


@pytest.mark.parametrize("task_name", ["sst2", "rte", "wnli", "qnli", "mnli", "imdb"])
def test_accuracy_tasks_report_only_accuracy(task_name):
    metrics = compute_task_metrics(task_name, np.array([2, 0, 1, 1]), np.array([2, 0, 0, 1]))
    assert metrics == pytest.approx({"accuracy": 0.75})


def test_matthews_correlation_matches_hand_computed_value():
    # tp=1, tn=2, fp=1, fn=0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2)
    metrics = compute_task_metrics("cola", np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert metrics == pytest.approx({"matthews_correlation": 2 / math.sqrt(12)})


def test_correlations_match_hand_computed_values():
    # ranks differ in two places: spearman = 1 - 6 * 2 / (3 * (9 - 1)); pearson = cov 1 / var 2
    metrics = compute_task_metrics("stsb", np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    assert metrics == pytest.approx({"pearson": 0.5, "spearmanr": 0.5})


def test_constant_predictions_give_zero_not_nan():
    references = np.array([0, 1, 1, 0])
    assert compute_task_metrics("cola", np.ones(4, dtype=int), references) == {"matthews_correlation": 0.0}
    assert compute_task_metrics("stsb", np.full(4, 2.5), references * 5.0) == {"pearson": 0.0, "spearmanr": 0.0}
    assert compute_task_metrics("stsb", np.arange(4.0), np.full(4, 3.0)) == {"pearson": 0.0, "spearmanr": 0.0}


def test_f1_without_predicted_positives_is_zero():
    metrics = compute_task_metrics("qqp", np.zeros(3, dtype=int), np.array([1, 0, 0]))
    assert metrics == pytest.approx({"accuracy": 2 / 3, "f1": 0.0})


def test_task_error_uses_the_main_metric():
    metrics = {"accuracy": 0.75, "f1": 0.8}
    assert task_error("mrpc", metrics) == pytest.approx(0.2)
    assert task_error("rte", {"accuracy": 0.75}) == pytest.approx(0.25)
    assert task_error("stsb", {"pearson": 0.9, "spearmanr": 0.6}) == pytest.approx(0.4)


def test_metrics_with_error_adds_one_minus_the_main_metric():
    # 3 of 4 right; one true positive, one false positive, no false negative: F1 = 2 / (2 + 1).
    metrics = metrics_with_error("mrpc", np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert metrics == pytest.approx({"accuracy": 0.75, "f1": 2 / 3, "error": 1 / 3})


def test_main_metric_is_one_of_the_task_metrics():
    for task_name, metric in MAIN_METRIC.items():
        predictions = np.array([0.0, 1.0, 1.0]) if task_name == "stsb" else np.array([0, 1, 1])
        assert metric in compute_task_metrics(task_name, predictions, np.array([0, 1, 0]))


def test_trivial_metric_predicts_the_majority_training_class():
    assert trivial_metric("sst2", np.array([1, 1, 0]), np.array([1, 0, 0, 0])) == pytest.approx(0.25)
    # always 1: precision 3/4, recall 1
    assert trivial_metric("mrpc", np.array([1, 0, 1]), np.array([1, 0, 1, 1])) == pytest.approx(6 / 7)
    # a tie goes to the smallest class id, here 0
    assert trivial_metric("rte", np.array([0, 1]), np.array([0, 0, 1])) == pytest.approx(2 / 3)
    assert trivial_metric("cola", np.array([1, 1, 0]), np.array([1, 0, 1])) == 0.0
    assert trivial_metric("imdb", np.array([0, 1, 1]), np.array([1, 1, 0, 1, 0])) == pytest.approx(3 / 5)


def test_trivial_metric_of_regression_is_zero_correlation():
    assert trivial_metric("stsb", np.array([1.0, 4.0]), np.array([0.5, 3.0, 5.0])) == 0.0


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(UsageError, match="cola, imdb, mnli, mrpc"):
        compute_task_metrics("yelp", np.array([1]), np.array([1]))


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        compute_task_metrics("sst2", np.zeros((3, 2)), np.zeros(3))
