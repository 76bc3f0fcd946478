"""Multi-fidelity search: the racing rule on hand-built errors, and the search it drives on a tiny model."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, sem, spearmanr
from tiny_runs import logits_on, train
from transformers import AutoModelForSequenceClassification

import run_offline_search
from nas_llm.common.errors import UsageError
from nas_llm.data.data import (
    BATCH_OVERHEAD_TOKENS,
    DataArguments,
    load_raw_splits,
    make_dataloader,
    tokenize_splits,
)
from nas_llm.data.metrics import compute_task_metrics, resampled_errors, task_error
from nas_llm.model.models import load_supernet
from nas_llm.model.slicing import runner_for
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search import offline
from nas_llm.search.multi_fidelity import (
    MultiFidelityArguments,
    ValidationRace,
    check_task,
    excess_error_bound,
    front_members,
    increment_batch_size,
    race,
    share_increments,
)
from nas_llm.search.pareto import pareto_indices
from nas_llm.training import evaluation

NUM_EXAMPLES = 400
SHARES = [0.1, 0.3]


def wrong_on(labels: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    return np.where(wrong, 1 - labels, labels)


def hand_built_race(wrong_per_increment: list[float], cost: float, front: list[tuple[float, float]], seed: int = 0):
    """Race an accuracy-scored sub-network that gets the first given share of each increment's examples wrong
    against fully scored records of (error, cost) that get that share of each increment wrong at random."""
    sizes = [len(indices) for indices in share_increments(NUM_EXAMPLES, SHARES, seed)]
    labels = [np.random.default_rng([seed, increment]).integers(0, 2, size) for increment, size in enumerate(sizes)]
    rng = np.random.default_rng([seed, 99])
    records = [{"iteration": iteration, "error": error, "params": member_cost, "validation_predictions": np.concatenate(
        [wrong_on(increment_labels, rng.permutation(len(increment_labels)) < round(error * len(increment_labels)))
         for increment_labels in labels]).tolist()} for iteration, (error, member_cost) in enumerate(front)]
    asked = []

    def predict_increment(increment: int) -> tuple[np.ndarray, np.ndarray]:
        asked.append(increment)
        wrong = np.arange(sizes[increment]) < round(wrong_per_increment[increment] * sizes[increment])
        return wrong_on(labels[increment], wrong), labels[increment]

    members = front_members(records, "params", cost)
    metrics, fidelity = race("sst2", predict_increment, len(sizes), NUM_EXAMPLES, members, 2.0,
                             np.random.default_rng(seed))
    return metrics, fidelity, asked


def test_shares_are_nested_seeded_and_cover_the_split_once():
    increments = share_increments(NUM_EXAMPLES, SHARES, seed=3)
    assert [len(indices) for indices in increments] == [40, 80, 280]
    assert sorted(np.concatenate(increments).tolist()) == list(range(NUM_EXAMPLES))
    assert all(np.array_equal(a, b) for a, b in zip(increments, share_increments(NUM_EXAMPLES, SHARES, 3), strict=True))
    assert not np.array_equal(increments[0], share_increments(NUM_EXAMPLES, SHARES, seed=4)[0])


@pytest.mark.parametrize("wrong", [0, 7, 20, 40])
def test_accuracy_bound_against_a_member_never_wrong_is_the_normal_bound_of_the_error(wrong):
    """A member that is always right: the difference is the proposal's share of wrong examples p, whose standard
    error is sqrt(p (1 - p) / (n - 1)) (with a split far larger than the share, the finite-population factor is 1)."""
    labels = np.zeros(40, dtype=int)
    predictions = np.r_[np.ones(wrong, dtype=int), np.zeros(40 - wrong, dtype=int)]
    bound = excess_error_bound("sst2", predictions, labels, labels, 10**12, 2.0, np.random.default_rng(0))
    share = wrong / 40
    assert bound == pytest.approx(share - 2.0 * np.sqrt(share * (1 - share) / 39), abs=1e-9)


def test_accuracy_bound_is_the_mean_paired_difference_minus_z_standard_errors_of_it():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    proposal, member = wrong_on(labels, rng.random(60) < 0.3), wrong_on(labels, rng.random(60) < 0.2)
    differences = (proposal != labels).astype(float) - (member != labels)
    bound = excess_error_bound("sst2", proposal, member, labels, 200, 1.5, rng)
    assert bound == pytest.approx(differences.mean() - 1.5 * sem(differences) * np.sqrt(140 / 199), abs=1e-12)


@pytest.mark.parametrize("task_name", ["stsb", "sst2", "cola"])
def test_resampled_errors_are_the_task_errors_of_each_resample(task_name):
    """Spearman is computed for all resamples at once: it must equal compute_task_metrics row by row, ties and
    a constant resample (correlations 0: error 1) included."""
    rng = np.random.default_rng(0)
    labels = np.round(rng.normal(size=30), 1) if task_name == "stsb" else rng.integers(0, 2, 30)
    predictions = np.round(labels + rng.normal(size=30), 1) if task_name == "stsb" else rng.integers(0, 2, 30)
    rows = np.vstack([rng.integers(0, 30, size=(20, 30)), np.zeros((1, 30), dtype=int)])
    expected = [task_error(task_name, compute_task_metrics(task_name, predictions[row], labels[row])) for row in rows]
    assert resampled_errors(task_name, predictions, labels, rows) == pytest.approx(expected, abs=1e-12)
    assert expected[-1] == 1.0 or task_name == "sst2"


def test_resampled_ranks_are_scipy_s_average_ranks_of_each_resample():
    """The Spearman bootstrap ranks every resample from the counts of its draws; each row must equal SciPy's
    rankdata of that resample exactly: continuous values, many ties, a constant vector, a row of one draw."""
    from scipy.stats import rankdata

    from nas_llm.data.metrics import _resampled_ranks

    rng = np.random.default_rng(3)
    for values in (rng.normal(size=50), np.round(rng.uniform(0, 5, 50)), np.full(50, 2.5)):
        rows = np.vstack([rng.integers(0, 50, size=(40, 50)), np.full((1, 50), 7)])
        assert np.array_equal(_resampled_ranks(values, rows), rankdata(values[rows], axis=1))


@pytest.mark.parametrize("task_name", ["mrpc", "cola"])
def test_binary_f1_and_matthews_of_each_resample_are_scikit_learn_s(task_name):
    """F1 (MRPC) and Matthews correlation (CoLA) are computed for all resamples at once from confusion counts:
    they must equal scikit-learn's on each resample, including resamples with no positive prediction or label
    and constant ones (scikit-learn's 0.0)."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    rng = np.random.default_rng(2)
    labels, predictions = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    negatives = np.flatnonzero((labels == 0) & (predictions == 0))
    rows = np.vstack([rng.integers(0, 40, size=(30, 40)), np.full((1, 40), negatives[0]),  # nothing positive
                      np.full((1, 40), np.flatnonzero(predictions == 1)[0])])  # a constant prediction
    score = (lambda row: f1_score(labels[row], predictions[row], zero_division=0.0)) if task_name == "mrpc" else (
        lambda row: matthews_corrcoef(labels[row], predictions[row]))
    expected = [1 - score(row) for row in rows]
    assert resampled_errors(task_name, predictions, labels, rows) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("task_name, metric", [("stsb", "pearson"), ("mrpc", "accuracy")])
def test_resampled_errors_in_another_metric_than_the_main_one(task_name, metric):
    """1 - `metric` of each resample (the comparison with RFP scores MRPC by accuracy, whose main metric is F1)."""
    rng = np.random.default_rng(1)
    labels = rng.normal(size=30) if task_name == "stsb" else rng.integers(0, 2, 30)
    predictions = labels + rng.normal(size=30) if task_name == "stsb" else rng.integers(0, 2, 30)
    rows = rng.integers(0, 30, size=(20, 30))
    expected = [1 - (pearsonr(predictions[row], labels[row]).statistic if metric == "pearson"
                     else np.mean(predictions[row] == labels[row])) for row in rows]
    assert resampled_errors(task_name, predictions, labels, rows, metric) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("task_name", ["sst2", "mrpc", "stsb"])
def test_equal_predictions_differ_by_exactly_nothing(task_name):
    rng = np.random.default_rng(0)
    labels = rng.normal(size=50) if task_name == "stsb" else rng.integers(0, 2, 50)
    predictions = labels + rng.normal(size=50) if task_name == "stsb" else wrong_on(labels, rng.random(50) < 0.3)
    assert excess_error_bound(task_name, predictions, predictions.copy(), labels, 500, 2.0, rng) == 0.0


def test_correlation_bound_follows_the_bootstrap_standard_error_of_spearman():
    """Against a member that predicts the labels (error 0 on every resample), the difference is the proposal's
    error, whose standard error for a bivariate normal sample is about sqrt(1.06 / (n - 3)) * (1 - rho^2)
    (Fieller et al. 1957); the bootstrap's must be close, and the rest of the split shrinks it by sqrt((N-n)/(N-1))."""
    rng = np.random.default_rng(0)
    labels = rng.normal(size=400)
    predictions = 0.7 * labels + np.sqrt(1 - 0.7**2) * rng.normal(size=400)
    rho = spearmanr(predictions, labels).statistic
    fieller = np.sqrt(1.06 / 397) * (1 - rho**2)
    bound = excess_error_bound("stsb", predictions, labels, labels, 10**12, 1.0, np.random.default_rng(1))
    assert (1 - rho) - bound == pytest.approx(fieller, rel=0.2)
    shrunk = excess_error_bound("stsb", predictions, labels, labels, 800, 1.0, np.random.default_rng(1))
    assert (1 - rho) - shrunk == pytest.approx(((1 - rho) - bound) * np.sqrt(400 / 799), rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_a_sub_network_clearly_worse_on_the_first_share_is_never_fully_scored(seed):
    metrics, fidelity, asked = hand_built_race([0.5, 0.0, 0.0], cost=0.6, front=[(0.1, 0.5), (0.05, 1.0)], seed=seed)
    assert asked == [0]  # even a perfect rest of the split was never scored
    assert fidelity["fidelity"] == 0.1 and metrics["error"] == 0.5
    assert fidelity["excess_error_bounds"][0] > 0 and fidelity["stopped_by"] == 0
    # told the cheaper member's error plus their difference on the first share (its 4 of 40 wrong): 0.1 + 0.4
    assert fidelity["error"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("wrong", [[0.05, 0.05, 0.05], [0.1, 0.0, 0.0], [0.0, 0.5, 0.5]])
def test_a_sub_network_no_worse_than_the_front_on_the_first_share_is_scored_further(seed, wrong):
    """As many wrong as the front's member at its cost on the first share, but not the same ones, or fewer: it goes
    on, and if the second share does not make it clearly worse, it ends scored on every example."""
    metrics, fidelity, asked = hand_built_race(wrong, cost=0.6, front=[(0.1, 0.5)], seed=seed)
    assert asked[:2] == [0, 1]
    if wrong[1] < 0.5:
        assert fidelity["fidelity"] == 1.0 and asked == [0, 1, 2] and "stopped_by" not in fidelity
        expected_wrong = (round(wrong[0] * 40) + round(wrong[1] * 80) + round(wrong[2] * 280)) / NUM_EXAMPLES
        assert metrics["error"] == pytest.approx(expected_wrong)
        assert len(fidelity["validation_predictions"]) == NUM_EXAMPLES
    else:  # 40 of the first 120 examples wrong against the member's 12: stopped after the second share
        assert asked == [0, 1] and fidelity["fidelity"] == 0.3 and metrics["error"] == pytest.approx(40 / 120)
        assert fidelity["error"] == pytest.approx(0.1 + (40 - 12) / 120)


def test_a_sub_network_that_agrees_with_a_cheaper_member_on_every_example_scored_is_not_stopped_by_it():
    """Zero disagreements on a share do not exclude disagreements on the rest of the split, where it may be the
    better one: a bound of exactly 0 does not stop it."""
    labels = np.random.default_rng(0).integers(0, 2, NUM_EXAMPLES)
    member = wrong_on(labels, np.random.default_rng(1).random(NUM_EXAMPLES) < 0.4)
    records = [{"iteration": 0, "error": float(np.mean(member != labels)), "params": 0.5,
                "validation_predictions": member.tolist()}]
    sizes = np.cumsum([0, *(len(i) for i in share_increments(NUM_EXAMPLES, SHARES, 0))])
    asked = []

    def predict_increment(increment: int) -> tuple[np.ndarray, np.ndarray]:
        asked.append(increment)
        return member[sizes[increment]:sizes[increment + 1]], labels[sizes[increment]:sizes[increment + 1]]

    _, fidelity = race("sst2", predict_increment, 3, NUM_EXAMPLES, front_members(records, "params", 0.7), 2.0,
                       np.random.default_rng(0))
    assert asked == [0, 1, 2] and fidelity["excess_error_bounds"] == [0.0, 0.0] and fidelity["fidelity"] == 1.0


def test_a_sub_network_cheaper_than_the_whole_front_is_always_fully_scored():
    metrics, fidelity, asked = hand_built_race([1.0, 1.0, 1.0], cost=0.4, front=[(0.1, 0.5)])
    assert asked == [0, 1, 2] and fidelity["fidelity"] == 1.0 and fidelity["excess_error_bounds"] == [None, None]
    assert metrics["error"] == 1.0


@pytest.mark.parametrize(("batch_size", "increment", "examples", "expected"), [
    (64, 173, 1725, 8),  # 6.4 rounds to 6: the floor of 8
    (64, 345, 1725, 13),  # 12.8
    (64, 1207, 1725, 45),  # 44.8
    (64, 1725, 1725, 64),  # the whole split: the search's own batch size
    (4, 10, 100, 4),  # a search batch below the floor keeps its size
])
def test_an_increment_is_cut_into_about_as_many_batches_as_the_whole_split(batch_size, increment, examples, expected):
    assert increment_batch_size(batch_size, increment, examples) == expected


def test_the_race_scores_each_increment_in_batches_scaled_to_its_share(trained):
    _, tokenizer, validation = validation_split(trained)
    racing = ValidationRace(MultiFidelityArguments(True, [0.2, 0.5], 1.0), validation, tokenizer, 30, "rte", "params",
                            1)
    sizes = [[len(batch) for batch in loader.batch_sampler] for loader in racing.loaders]
    assert [len(validation), *map(sum, sizes)] == [60, 12, 18, 30]  # the shares of 60 examples
    assert sizes == [[8, 4], [9, 9], [15, 15]]  # 30 x 12/60 = 6 -> 8; 30 x 18/60 = 9; 30 x 30/60 = 15


def padded_tokens_and_overhead(loader) -> int:
    return sum(batch["input_ids"].numel() + BATCH_OVERHEAD_TOKENS for batch in loader)


def test_with_least_padding_the_race_cuts_each_increment_where_its_padding_is_least(trained):
    _, tokenizer, validation = validation_split(trained)
    args = MultiFidelityArguments(True, [0.2, 0.5], 1.0)
    scaled = ValidationRace(args, validation, tokenizer, 30, "rte", "params", 1)
    least = ValidationRace(args, validation, tokenizer, 30, "rte", "params", 1, least_padding=True)
    for scaled_loader, loader, indices in zip(scaled.loaders, least.loaders, share_increments(60, [0.2, 0.5], 1),
                                              strict=True):
        assert sorted(row for batch in loader.batch_sampler for row in batch) == list(range(len(indices)))
        assert max(map(len, loader.batch_sampler)) <= 30
        assert padded_tokens_and_overhead(loader) <= padded_tokens_and_overhead(scaled_loader)


@pytest.mark.parametrize("shares", [[0.5, 0.3], [0.0, 0.5], [1.0], []])
def test_bad_shares_are_refused(shares):
    with pytest.raises(UsageError, match="--fidelity_shares must be increasing shares in"):
        MultiFidelityArguments(multi_fidelity=True, fidelity_shares=shares)


# ----------------------------------------------------------------------------- the search on a tiny model

FIDELITY = ["--multi_fidelity", "True", "--fidelity_shares", "0.2", "0.5", "--fidelity_z", "1.0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BERT super-network with 60 validation examples (30% of 200), enough for shares of 12 and 30."""
    return train(tmp_path_factory.mktemp("multi_fidelity"), "bert", num_train=200)


def search(output_dir, trained, *extra, num_samples=30) -> dict:
    model_dir, data_dir, checkpoint = trained
    run_offline_search.main([
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--checkpoint_dir_model", str(checkpoint), "--search_space", "small", "--search_strategy", "random_search",
        "--num_samples", str(num_samples), "--output_dir", str(output_dir), "--log_dir", str(output_dir / "tb"),
        "--seed", "1", "--cost_seq_len", "16", "--latency_repeats", "1", *extra,
    ])
    return json.loads((output_dir / "results_rte.json").read_text())


def logged(output_dir) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "evaluations.jsonl").read_text().splitlines()]


def validation_split(trained):
    """The super-network, its tokenizer and the tokenized validation split, loaded outside the search."""
    model_dir, data_dir, checkpoint = trained
    model, tokenizer, _ = load_supernet(str(checkpoint))
    data_args = DataArguments(task_name="rte", data_dir=str(data_dir))
    return model.eval(), tokenizer, tokenize_splits(load_raw_splits(data_args), tokenizer, data_args,
                                                    ("validation",))["validation"]


def plain_predictions(model, loader, record: dict) -> tuple[np.ndarray, np.ndarray]:
    return evaluation.predict(model, loader, torch.device("cpu"), SubNetwork.from_compact(record["sub_network_masks"]),
                              runner_for("slice"))


def full_split_errors(trained, records: list[dict], bf16: bool = False) -> list[float]:
    """Each sub-network's error by a plain evaluation of the whole validation split, outside the search."""
    model, tokenizer, validation = validation_split(trained)
    loader = make_dataloader(validation, tokenizer, 8, False, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return [evaluation.evaluate(model, loader, "rte", torch.device("cpu"),
                                    SubNetwork.from_compact(record["sub_network_masks"]), runner_for("slice"))["error"]
                for record in records]


def predictions_share_by_share(trained, records: list[dict]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each sub-network's predictions on the whole validation split in the race's order of examples (the shares of
    FIDELITY, seeded by the search's seed), and the labels: plain predictions outside the search."""
    model, tokenizer, validation = validation_split(trained)
    loaders = [make_dataloader(validation.select(indices), tokenizer, 8, False, 0)
               for indices in share_increments(len(validation), [0.2, 0.5], seed=1)]
    scored = [[plain_predictions(model, loader, record) for loader in loaders] for record in records]
    labels = np.concatenate([increment_labels for _, increment_labels in scored[0]])
    return [np.concatenate([increment for increment, _ in shares]) for shares in scored], labels


def test_exact_search_scores_every_sub_network_on_the_whole_split(tmp_path, trained):
    results = search(tmp_path / "exact", trained)
    records = logged(tmp_path / "exact")
    assert not any("fidelity" in record for record in records)
    assert not {"multi_fidelity", "fidelity_shares", "fidelity_z", "fidelity_rule", "bf16"} & results["settings"].keys()
    assert [record["error"] for record in records] == full_split_errors(trained, records)
    costs = np.array([[record["error"], record["params"]] for record in records])
    assert sorted(results["pareto_indices"]) == pareto_indices(costs)


@pytest.fixture(scope="module")
def exact_and_raced(tmp_path_factory, trained):
    folder = tmp_path_factory.mktemp("searches")
    return (search(folder / "exact", trained), logged(folder / "exact"),
            search(folder / "raced", trained, *FIDELITY), logged(folder / "raced"))


def test_raced_search_stops_some_sub_networks_and_scores_the_rest_fully(trained, exact_and_raced):
    exact, exact_records, raced, records = exact_and_raced
    assert {record["fidelity"] for record in records} == {12 / 60, 30 / 60, 1.0}
    full = [index for index, record in enumerate(records) if record["fidelity"] == 1.0]
    # random search proposes the same sub-networks whatever it is told, so the exact run is the reference
    assert [r["config"] for r in records] == [r["config"] for r in exact_records]
    assert [records[index]["error"] for index in full] == [exact_records[index]["error"] for index in full]
    assert [records[index]["error"] for index in full] == full_split_errors(trained, [records[i] for i in full])


def test_raced_search_stops_a_sub_network_exactly_when_a_front_member_costing_no_more_is_better_with_confidence(
        trained, exact_and_raced):
    """Each record's bounds, recomputed from plain predictions against the front of the earlier fully scored
    records: it stopped at the first share whose bound reached 0, and not before."""
    *_, records = exact_and_raced
    predictions, labels = predictions_share_by_share(trained, records)
    for index, record in enumerate(records):
        scored_before = [r["iteration"] for r in records[:index]
                         if r["fidelity"] == 1.0 and r["sub_network_masks"] == record["sub_network_masks"]]
        assert record.get("same_as") == (scored_before[0] if scored_before else None)
        if scored_before:  # not scored again (tested on its own below)
            continue
        members = front_members(records[:index], "params", record["params"])
        bounds = [max((excess_error_bound("rte", predictions[index][:scored], member.predictions[:scored],
                                          labels[:scored], 60, 1.0, np.random.default_rng(0)) for member in members),
                      default=None) for scored in (12, 30)[:len(record["excess_error_bounds"])]]
        assert record["excess_error_bounds"] == bounds
        stopped_at = [bound is not None and bound > 0 for bound in bounds]
        assert stopped_at == [False] * (len(stopped_at) - 1) + [record["fidelity"] < 1.0]
        if record["fidelity"] == 1.0:
            assert record["validation_predictions"] == predictions[index].tolist()
        else:  # told an error that the member which stopped it dominates
            assert record["stopped_by"] in [member.iteration for member in members]
            assert record["error"] >= records[record["stopped_by"]]["error"]


def test_a_sub_network_scored_fully_before_is_not_scored_again(trained, exact_and_raced):
    """Scoring is deterministic: a proposal equal to a fully scored sub-network gets its metrics and predictions
    without a forward pass; one equal to a stopped sub-network is raced anew."""
    *_, records = exact_and_raced
    model, tokenizer, validation = validation_split(trained)
    racing = ValidationRace(MultiFidelityArguments(True, [0.2, 0.5], 1.0), validation, tokenizer, 8, "rte", "params", 1)
    full = next(record for record in records if record["fidelity"] == 1.0 and not record.get("same_as"))
    predicted = []

    def predict_on(loader):
        predicted.append(len(loader.dataset))
        return plain_predictions(model, loader, full)

    metrics, fidelity = racing.score(predict_on, full["sub_network_masks"], full["params"], records, len(records))
    assert predicted == [] and metrics == full["validation"] and fidelity["same_as"] == full["iteration"]
    assert fidelity["fidelity"] == 1.0 and fidelity["validation_predictions"] == full["validation_predictions"]
    others = [record for record in records if record["sub_network_masks"] != full["sub_network_masks"]]
    stopped_copy = {**full, "fidelity": 0.2}
    _, fidelity = racing.score(predict_on, full["sub_network_masks"], full["params"], [*others, stopped_copy],
                               len(records))
    assert predicted[0] == 12 and "same_as" not in fidelity


def test_raced_pareto_set_holds_only_fully_scored_sub_networks(exact_and_raced):
    *_, raced, records = exact_and_raced
    full = [index for index, record in enumerate(records) if record["fidelity"] == 1.0]
    front = [full[i] for i in pareto_indices(np.array([[records[i]["error"], records[i]["params"]] for i in full]))]
    assert sorted(raced["pareto_indices"]) == sorted(front)
    assert [point["iteration"] for point in raced["pareto_set"]] == raced["pareto_indices"]


class Killed(Exception):
    """Stands for SIGKILL: nothing after it runs, and the log holds what was fsync'd before it."""


def test_search_killed_in_the_middle_of_a_promotion_resumes_to_the_uninterrupted_results(
        tmp_path, trained, exact_and_raced, monkeypatch):
    *_, raced, records = exact_and_raced
    promotions = []

    def predict_until_the_third_promotion(model, loader, *args):
        if len(loader.dataset) != 12:  # a sub-network that went on past the first share
            promotions.append(loader)
            if len(promotions) == 3:
                raise Killed
        return evaluation.predict(model, loader, *args)

    monkeypatch.setattr(offline, "predict", predict_until_the_third_promotion)
    with pytest.raises(Killed):
        search(tmp_path / "resumed", trained, *FIDELITY)
    monkeypatch.undo()
    interrupted = logged(tmp_path / "resumed")
    assert 0 < len(interrupted) < 30 and not (tmp_path / "resumed" / "results_rte.json").exists()
    resumed = search(tmp_path / "resumed", trained, *FIDELITY)
    keys = ("config", "error", "fidelity", "excess_error_bounds", "stopped_by", "same_as", "validation_predictions",
            "validation", "params")
    assert [[r.get(k) for k in keys] for r in logged(tmp_path / "resumed")] == [[r.get(k) for k in keys]
                                                                                 for r in records]
    assert resumed["pareto_indices"] == raced["pareto_indices"]
    assert [p["test"] for p in resumed["pareto_set"]] == [p["test"] for p in raced["pareto_set"]]


@pytest.mark.parametrize(("first", "second", "message"), [
    ((), FIDELITY, "holds a run with --multi_fidelity None (this run: True)"),
    (FIDELITY, (), "holds a run with --multi_fidelity True (this run: None)"),
])
def test_resuming_across_fidelity_settings_is_refused(tmp_path, trained, first, second, message):
    search(tmp_path / "run", trained, *first, num_samples=2)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search(tmp_path / "run", trained, *second, num_samples=3)


def test_least_padding_search_scores_like_a_plain_evaluation_and_records_the_setting(tmp_path, trained):
    results = search(tmp_path / "least_padding", trained, "--least_padding", "True", num_samples=6)
    records = logged(tmp_path / "least_padding")
    assert results["settings"]["least_padding"] is True
    assert [record["error"] for record in records] == full_split_errors(trained, records)
    with pytest.raises(UsageError, match="--least_padding"):
        search(tmp_path / "least_padding", trained, num_samples=7)


def test_bf16_search_scores_under_bf16_autocast(tmp_path, trained):
    results = search(tmp_path / "bf16", trained, "--bf16", "True", num_samples=6)
    records = logged(tmp_path / "bf16")
    assert results["settings"]["bf16"] is True
    assert [record["error"] for record in records] == full_split_errors(trained, records, bf16=True)


@pytest.mark.parametrize("fidelity", [[], FIDELITY], ids=["exact", "multi_fidelity"])
def test_bf16_search_of_a_regression_task_scores_its_outputs(tmp_path, toy_regression, fidelity):
    """The regression head's outputs are bf16 under autocast; the search scores them like a plain bf16 pass."""
    run_offline_search.main([
        "--model_name_or_path", str(toy_regression.model_dir), *toy_regression.data_flags(),
        "--checkpoint_dir_model", str(toy_regression.supernet), "--search_space", "small",
        "--search_strategy", "random_search", "--num_samples", "3", "--seed", "0", "--output_dir", str(tmp_path),
        "--log_dir", str(tmp_path / "tb"), "--cost_seq_len", "16", "--latency_repeats", "1", "--bf16", "True",
        *fidelity,
    ])
    largest = logged(tmp_path)[0]  # the initial design starts with the whole network
    assert largest["params"] == 1.0
    plain = AutoModelForSequenceClassification.from_pretrained(toy_regression.supernet)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, labels = logits_on(plain, toy_regression, "validation")
    expected = spearmanr(logits[:, 0].float().numpy(), labels).statistic
    assert largest["validation"]["spearmanr"] == pytest.approx(expected, abs=0.02)


def test_multi_fidelity_refuses_language_modelling():
    with pytest.raises(UsageError, match="--task_name lm is scored as one loss"):
        check_task("lm")
