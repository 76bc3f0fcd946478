"""GLUE (and IMDB) metrics computed offline with scikit-learn and SciPy.

``evaluate.load("glue")`` downloads its script from the Hugging Face hub, so it fails on machines
without internet; these functions give the same numbers from local libraries.
"""

import numpy as np

from nas_llm.common.errors import UsageError

# The metric the search turns into an error (1 - metric), as in the original NAS-for-LLMs example.
MAIN_METRIC: dict[str, str] = {
    "cola": "matthews_correlation",
    "mnli": "accuracy",
    "mrpc": "f1",
    "qnli": "accuracy",
    "qqp": "f1",
    "rte": "accuracy",
    "sst2": "accuracy",
    "stsb": "spearmanr",
    "wnli": "accuracy",
    "imdb": "accuracy",
    "swag": "accuracy",  # multiple choice: the share of examples whose right ending scores highest
    # user data (--train_file without --task_name): accuracy, or Spearman correlation for float labels
    "classification": "accuracy",
    "regression": "spearmanr",
}

REGRESSION_TASKS = frozenset({"stsb", "regression"})


def metric_task(task_name: str | None, is_regression: bool) -> str:
    """The metrics' key for a run: the task, or 'classification'/'regression' for user data."""
    if task_name is not None:
        return task_name
    return "regression" if is_regression else "classification"


def _check_task(task_name: str) -> None:
    if task_name not in MAIN_METRIC:
        raise UsageError(f"Unknown task '{task_name}'; choose one of: {', '.join(sorted(MAIN_METRIC))}.")


def _as_matching_vectors(predictions: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metrics on mismatched shapes (e.g. logits instead of class ids) would be silently wrong."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.ndim != 1 or predictions.shape != references.shape or predictions.size == 0:
        raise ValueError(
            "predictions and references must be non-empty 1-D arrays of the same length, got shapes "
            f"{predictions.shape} and {references.shape}"
        )
    return predictions, references


def _correlation(correlate, predictions: np.ndarray, references: np.ndarray) -> float:
    """A constant vector has no defined correlation; 0.0 (no linear/rank relation) keeps errors finite."""
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return 0.0
    return float(correlate(predictions, references).statistic)


def compute_task_metrics(task_name: str, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """The GLUE metrics of one task, equal to ``evaluate.load("glue", task_name)``.

    ``predictions`` are class ids for classification tasks and floats for STS-B.
    Unlike SciPy, Pearson and Spearman correlations are 0.0 (not NaN) when either vector is
    constant, and Matthews correlation is 0.0 for a constant prediction (as scikit-learn does),
    so a degenerate sub-network gets a finite, maximal-ish error instead of breaking the search.
    """
    # Imported here, not at the top: SciPy and scikit-learn take a second to import, which `--help` need not wait.
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    _check_task(task_name)
    predictions, references = _as_matching_vectors(predictions, references)
    if task_name in REGRESSION_TASKS:
        predictions, references = predictions.astype(np.float64), references.astype(np.float64)
        return {
            "pearson": _correlation(pearsonr, predictions, references),
            "spearmanr": _correlation(spearmanr, predictions, references),
        }
    if task_name == "cola":
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
    metrics = {"accuracy": float(accuracy_score(references, predictions))}
    if task_name in ("mrpc", "qqp"):
        metrics["f1"] = float(f1_score(references, predictions, zero_division=0.0))
    return metrics


def task_error(task_name: str, metrics: dict[str, float]) -> float:
    """The objective the search minimises: 1 - the task's main metric."""
    _check_task(task_name)
    return 1.0 - metrics[MAIN_METRIC[task_name]]


def metrics_with_error(task_name: str, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """The task's metrics plus `error`, the objective the search minimises: what every evaluation records."""
    metrics = compute_task_metrics(task_name, predictions, references)
    return metrics | {"error": task_error(task_name, metrics)}


def resampled_errors(task_name: str, predictions: np.ndarray, references: np.ndarray, rows: np.ndarray,
                     metric: str | None = None) -> np.ndarray:
    """1 - `metric` (by default the task's main metric: its error) on each resample of the examples, `rows`
    [resamples, n] of indices: a bootstrap's errors. Spearman, binary F1 and Matthews correlation are computed for
    all rows at once (a multi-fidelity search bootstraps them per share and front member, thousands of times a
    search; scikit-learn's f1_score takes milliseconds a call), every other metric row by row with
    compute_task_metrics."""
    metric = metric or MAIN_METRIC[task_name]
    if metric in ("f1", "matthews_correlation") and _is_binary(predictions, references):
        return 1.0 - _row_binary_metric(metric, np.asarray(predictions)[rows] == 1, np.asarray(references)[rows] == 1)
    if metric != "spearmanr":
        return np.array([1.0 - compute_task_metrics(task_name, predictions[row], references[row])[metric]
                         for row in rows])
    return 1.0 - _row_correlations(_resampled_ranks(np.asarray(predictions, dtype=np.float64), rows),
                                   _resampled_ranks(np.asarray(references, dtype=np.float64), rows))


def _resampled_ranks(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """SciPy's rankdata(values[rows], axis=1) (ties get their average rank) without sorting each resample: a
    resample's ranks follow from how often it drew each distinct value, so one sort of `values` serves every row
    (a search on STS-B ranked 200 resamples thousands of times; sorting each took a tenth of its time)."""
    distinct, value_index = np.unique(values, return_inverse=True)
    drawn = value_index[rows]
    row_offsets = len(distinct) * np.arange(len(rows))[:, None]
    counts = np.bincount((drawn + row_offsets).ravel(), minlength=len(rows) * len(distinct)).reshape(len(rows), -1)
    average_ranks = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2
    return np.take_along_axis(average_ranks, drawn, axis=1)


def _is_binary(predictions: np.ndarray, references: np.ndarray) -> bool:
    return bool(np.isin(predictions, (0, 1)).all() and np.isin(references, (0, 1)).all())


def _row_binary_metric(metric: str, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """F1 of the positive class (1) or Matthews correlation of each row of boolean `predicted` against `actual`,
    from the row's confusion counts; 0.0 where scikit-learn's is 0.0 by convention (no positive predicted or
    present for F1, a constant row for Matthews)."""
    true_positives = (predicted & actual).sum(axis=1).astype(np.float64)
    false_positives = (predicted & ~actual).sum(axis=1).astype(np.float64)
    false_negatives = (~predicted & actual).sum(axis=1).astype(np.float64)
    true_negatives = (~predicted & ~actual).sum(axis=1).astype(np.float64)
    if metric == "f1":
        numerator, denominator = 2 * true_positives, 2 * true_positives + false_positives + false_negatives
    else:
        numerator = true_positives * true_negatives - false_positives * false_negatives
        denominator = np.sqrt((true_positives + false_positives) * (true_positives + false_negatives)
                              * (true_negatives + false_positives) * (true_negatives + false_negatives))
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _row_correlations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pearson's correlation of each row of `first` with the same row of `second`; 0.0 where a row is constant,
    as in `_correlation`."""
    first = first - first.mean(axis=1, keepdims=True)
    second = second - second.mean(axis=1, keepdims=True)
    denominator = np.sqrt((first * first).sum(axis=1) * (second * second).sum(axis=1))
    covariance = (first * second).sum(axis=1)
    return np.divide(covariance, denominator, out=np.zeros_like(covariance), where=denominator > 0)


def trivial_metric(task_name: str, train_labels: np.ndarray, references: np.ndarray) -> float:
    """Main metric of a predictor that ignores its input, the floor a pruned model must beat."""
    return trivial_metrics(task_name, train_labels, references)[MAIN_METRIC[task_name]]


def trivial_metrics(task_name: str, train_labels: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Every metric of a predictor that ignores its input (MRPC: its F1 and its accuracy).

    It predicts the majority training class (ties: the smallest class id) for classification and
    the training mean for regression, whose correlations are 0.0 by the convention above.
    """
    _check_task(task_name)
    train_labels, references = np.asarray(train_labels), np.asarray(references)
    if train_labels.size == 0:
        raise ValueError("train_labels is empty")
    if task_name in REGRESSION_TASKS:
        constant = train_labels.astype(np.float64).mean()
    else:
        constant = np.bincount(train_labels.astype(np.int64)).argmax()
    predictions = np.full(references.shape, constant)
    return compute_task_metrics(task_name, predictions, references)
