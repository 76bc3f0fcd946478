"""Ties within the validation noise (prune.py --ties_within_noise True): the rule on hand-built predictions with
hand-computed paired standard errors, and the predictions a search records for it, checked against a plain
evaluation outside the search."""

import json
import math

import numpy as np
import pytest
import torch
from tiny_runs import search as tiny_search

from nas_llm.common.errors import UsageError
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits
from nas_llm.data.metrics import compute_task_metrics, task_error
from nas_llm.model.models import load_supernet
from nas_llm.model.slicing import runner_for
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.within_noise import largest_within_noise
from nas_llm.training import evaluation

UNPRUNED = {"num_layer_parameters": 100}
LABELS = np.array([0, 1] * 50)  # 100 validation examples


def point(iteration: int, layer_parameters: int, wrong: list[int], labels=LABELS) -> dict:
    """A search record whose predictions are wrong exactly on the examples `wrong`."""
    predictions = labels.copy()
    predictions[wrong] = 1 - predictions[wrong]
    return {"iteration": iteration, "num_layer_parameters": layer_parameters, "error": len(wrong) / len(labels),
            "validation_predictions": predictions.tolist()}


def paired_accuracy_se(wrong: list[int], best_wrong: list[int], n: int) -> tuple[float, float]:
    """By hand: the mean and standard error of the per-example differences of wrongness (each -1, 0 or 1)."""
    differences = [(i in wrong) - (i in best_wrong) for i in range(n)]
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    return mean, math.sqrt(variance / n)


BEST = point(0, 30, list(range(10)))  # wrong on 10 of 100: error 0.10
SWAPPED = point(1, 50, [*range(9), 50])  # as many wrong, one of them another example: difference 0, SE > 0
WORSE = point(2, 60, list(range(13)))  # three more wrong: difference 0.03
OVER_BUDGET = point(3, 80, list(range(10)))  # the same predictions as the best, too large


def test_the_hand_computed_differences_are_a_tie_and_a_miss_by_one_standard_error():
    """The premises of the next test: SWAPPED is within one standard error of BEST, WORSE is not."""
    difference, standard_error = paired_accuracy_se([*range(9), 50], list(range(10)), 100)
    assert difference == 0 and standard_error > 0
    difference, standard_error = paired_accuracy_se(list(range(13)), list(range(10)), 100)
    assert difference == pytest.approx(0.03) and standard_error == pytest.approx(math.sqrt(3 * 0.97**2 + 97 * 0.03**2)
                                                                                 / math.sqrt(99 * 100))
    assert difference > standard_error


def test_the_largest_sub_network_within_one_standard_error_of_the_best_ships():
    points = [BEST, SWAPPED, WORSE, OVER_BUDGET]
    assert largest_within_noise(points, 0.7, "encoder", UNPRUNED, "rte", LABELS) is SWAPPED
    assert largest_within_noise(points, 0.9, "encoder", UNPRUNED, "rte", LABELS) is OVER_BUDGET
    assert largest_within_noise(points, 0.4, "encoder", UNPRUNED, "rte", LABELS) is BEST  # nothing else fits
    assert largest_within_noise(points, 0.2, "encoder", UNPRUNED, "rte", LABELS) is None


def test_two_more_wrong_of_a_hundred_is_just_above_one_standard_error_and_one_more_is_a_tie():
    """At the boundary: one more wrong example of n is a difference of 1/n with a standard error of exactly 1/n (a
    tie: at most one standard error); two more are 0.02 against 0.0141 (not a tie)."""
    assert paired_accuracy_se(list(range(11)), list(range(10)), 100) == pytest.approx((0.01, 0.01))
    one_more, two_more = point(1, 50, list(range(11))), point(2, 60, list(range(12)))
    assert largest_within_noise([BEST, one_more], 1.0, "encoder", UNPRUNED, "rte", LABELS) is one_more
    assert largest_within_noise([BEST, two_more], 1.0, "encoder", UNPRUNED, "rte", LABELS) is BEST


def test_of_two_tied_sub_networks_of_one_size_the_lower_error_ships():
    lower = point(1, 50, list(range(9)))  # the best: 9 wrong
    higher = point(2, 50, list(range(10)))
    assert largest_within_noise([higher, lower], 1.0, "encoder", UNPRUNED, "rte", LABELS) is lower


def test_a_correlation_metric_ties_equal_predictions_and_not_random_ones():
    """STS-B: the paired bootstrap of Spearman. The same predictions tie exactly; predictions unrelated to the
    labels are far worse than ones close to them."""
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 300)
    close = {"iteration": 0, "num_layer_parameters": 30, "error": 0.0,
             "validation_predictions": (labels + rng.normal(0, 0.5, 300)).tolist()}
    close["error"] = task_error("stsb", compute_task_metrics("stsb", np.array(close["validation_predictions"]), labels))
    same = close | {"iteration": 1, "num_layer_parameters": 60}
    unrelated = {"iteration": 2, "num_layer_parameters": 90, "error": 0.99,
                 "validation_predictions": rng.uniform(0, 5, 300).tolist()}
    assert largest_within_noise([close, same], 1.0, "encoder", UNPRUNED, "stsb", labels) is same
    assert largest_within_noise([close, unrelated], 1.0, "encoder", UNPRUNED, "stsb", labels) is close


def test_points_without_predictions_are_refused_with_what_to_run():
    bare = {key: value for key, value in BEST.items() if key != "validation_predictions"}
    with pytest.raises(UsageError, match="--record_validation_predictions True"):
        largest_within_noise([bare], 1.0, "encoder", UNPRUNED, "rte", LABELS)


def test_a_search_records_each_sub_network_s_validation_predictions_as_a_plain_evaluation_makes_them(
        tmp_path, trained_bert):
    """--record_validation_predictions True: every record keeps the predictions of a plain evaluation of its
    sub-network (outside the search), the results keep the labels they follow, and the errors are those of a
    search without the flag, bit for bit."""
    model_dir, data_dir, checkpoint = trained_bert
    flag = ("--record_validation_predictions", "True")
    with_flag = tiny_search(tmp_path, model_dir, data_dir, checkpoint, "random_search", extra=flag)
    without = tiny_search(tmp_path / "without", model_dir, data_dir, checkpoint, "random_search")
    assert [r["error"] for r in with_flag["evaluations"]] == [r["error"] for r in without["evaluations"]]
    assert "recorded_validation" not in without
    records = [json.loads(line) for line in
               (tmp_path / "results_random_search_0" / "evaluations.jsonl").read_text().splitlines()]
    model, tokenizer, _ = load_supernet(str(checkpoint))
    data_args = DataArguments(task_name="rte", data_dir=str(data_dir))
    validation = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args, ("validation",))["validation"]
    loader = make_dataloader(validation, tokenizer, 8, False, 0)  # the split in its own order
    labels_in_order = np.array(validation["labels"])
    recorded_labels = np.array(with_flag["recorded_validation"]["labels"])
    assert with_flag["recorded_validation"]["task"] == "rte"
    assert sorted(recorded_labels.tolist()) == sorted(labels_in_order.tolist())
    for record in records:
        predictions, labels = evaluation.predict(model.eval(), loader, torch.device("cpu"),
                                                 SubNetwork.from_compact(record["sub_network_masks"]),
                                                 runner_for("slice"))
        recorded = np.array(record["validation_predictions"])
        # the search's loader orders examples its own way: compare the (prediction, label) pairs as multisets
        recorded_pairs = sorted(zip(recorded.tolist(), recorded_labels.tolist(), strict=True))
        assert recorded_pairs == sorted(zip(predictions.tolist(), labels.tolist(), strict=True))
        assert record["error"] == pytest.approx(1 - float(np.mean(recorded == recorded_labels)), abs=1e-12)
    assert "validation_predictions" not in with_flag["evaluations"][0]  # the log keeps them, not the results


@pytest.mark.parametrize(("multi_fidelity", "task_name", "message"), [
    (True, "rte", "is for an exact search"),
    (False, "lm", "needs a task scored on predictions"),
])
def test_recording_predictions_is_refused_where_they_would_not_be_comparable(multi_fidelity, task_name, message):
    from nas_llm.search.multi_fidelity import MultiFidelityArguments
    from nas_llm.search.offline import SearchArguments, check_search_flags

    with pytest.raises(UsageError, match=message):
        check_search_flags(SearchArguments(record_validation_predictions=True),
                           MultiFidelityArguments(multi_fidelity=multi_fidelity), task_name)
