"""The paired bootstrap's errors of F1 and Matthews correlation: all resamples at once against one
scikit-learn call per resample; and of Spearman correlation: each resample's ranks from the counts of its draws
against SciPy's rankdata, which sorts every resample. Side by side in one process, on the same predictions and
resamples.

The multi-fidelity race and prune.py --ties_within_noise compare two sub-networks with
`multi_fidelity.paired_error_difference`: for F1 (MRPC), Matthews correlation (CoLA) and Spearman (STS-B) the
standard deviation of the difference over 200 paired resamples. Both timings here give the same errors (checked
before timing).

    python bench/bench_bootstrap.py --num_examples 1101 --output bench/results_bootstrap.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sub_networks import machine_info  # noqa: E402

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.data.metrics import (  # noqa: E402
    MAIN_METRIC,
    _row_correlations,
    compute_task_metrics,
    resampled_errors,
)
from nas_llm.search.multi_fidelity import BOOTSTRAP_RESAMPLES  # noqa: E402


def one_call_per_resample(task_name: str, predictions: np.ndarray, labels: np.ndarray, rows: np.ndarray
                          ) -> np.ndarray:
    """What resampled_errors did for every metric but Spearman before it counted F1 and Matthews at once."""
    metric = MAIN_METRIC[task_name]
    return np.array([1.0 - compute_task_metrics(task_name, predictions[row], labels[row])[metric] for row in rows])


def sorted_ranks(task_name: str, predictions: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """What resampled_errors did for Spearman before it ranked from counts: SciPy sorts every resample."""
    from scipy.stats import rankdata

    return 1.0 - _row_correlations(rankdata(predictions[rows], axis=1), rankdata(labels[rows], axis=1))


def seconds_per_call(function, repeats: int) -> float:
    function()  # the first call imports scikit-learn
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def measure(task_name: str, num_examples: int, repeats: int) -> dict:
    """Both ways on BOOTSTRAP_RESAMPLES rows: for F1 and Matthews, predictions wrong on about 15% of `num_examples`
    binary labels; for Spearman, noisy scores of STS-B's kind (labels 0-5 in steps of 0.2, so with ties)."""
    rng = np.random.default_rng(0)
    if task_name == "stsb":
        labels = np.round(rng.uniform(0, 5, num_examples) * 5) / 5
        predictions = labels + rng.normal(0, 1, num_examples)
        baseline, baseline_repeats = sorted_ranks, repeats
    else:
        labels = rng.integers(0, 2, num_examples)
        predictions = np.where(rng.random(num_examples) < 0.15, 1 - labels, labels)
        baseline, baseline_repeats = one_call_per_resample, max(1, repeats // 20)
    rows = rng.integers(0, num_examples, size=(BOOTSTRAP_RESAMPLES, num_examples))
    at_once = resampled_errors(task_name, predictions, labels, rows)
    before = baseline(task_name, predictions, labels, rows)
    return {
        "task_name": task_name,
        "largest_difference": float(np.abs(at_once - before).max()),
        "seconds_at_once": seconds_per_call(lambda: resampled_errors(task_name, predictions, labels, rows), repeats),
        f"seconds_{baseline.__name__}": seconds_per_call(
            lambda: baseline(task_name, predictions, labels, rows), baseline_repeats),
    }


def main(argv: list[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_examples", type=int, default=1101,
                        help="Validation examples per resample (default: MRPC's 1,101 held-out training pairs).")
    parser.add_argument("--repeats", type=int, default=40,
                        help="Timed calls of the all-at-once errors and of SciPy's ranks (a twentieth of them of the "
                        "per-resample way).")
    parser.add_argument("--output", help="Write the measurements and the machine as JSON here.")
    args = parser.parse_args(argv)
    rows = [measure(task_name, args.num_examples, args.repeats) for task_name in ("mrpc", "cola", "stsb")]
    for row in rows:
        baseline = ("SciPy's rankdata" if row["task_name"] == "stsb" else "one scikit-learn call per resample")
        before = row.get("seconds_sorted_ranks", row.get("seconds_one_call_per_resample"))
        print(f"{row['task_name']}: {BOOTSTRAP_RESAMPLES} resamples of {args.num_examples}: all at once "
              f"{row['seconds_at_once'] * 1000:.1f} ms, {baseline} {before * 1000:.1f} ms "
              f"(largest difference {row['largest_difference']:.1e})")
    if args.output:
        command = "python bench/bench_bootstrap.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_json_atomic(Path(args.output), {"command": command, "machine": machine_info(),
                                              "num_examples": args.num_examples, "results": rows})


if __name__ == "__main__":
    exit_on_usage_error(main)
