"""Benchmark: which searcher finds the best front for a number of evaluations, and for a wall-clock budget.

Runs run_offline_search.py on one super-network once per searcher and seed (same flags otherwise) and draws
the validation hypervolume of the fully scored sub-networks found so far, against the number of evaluations
and against the search loop's seconds: the mean over seeds with the range of the seeds as a band. A run
whose results exist is not repeated, and an interrupted one resumes from its log (run_offline_search.py
does both), so the benchmark can be stopped and started again.

    python bench/bench_searchers.py --output_dir ./bench_searchers/stsb --seeds 0 1 2 --num_samples 300 -- \\
        --model_name_or_path $MINILM --task_name stsb --data_dir ../shared/data/glue \\
        --checkpoint_dir_model ./stsb/supernet --search_space small --objective params \\
        --multi_fidelity True --bf16 True --latency_repeats 1 --per_device_eval_batch_size 64

Everything after `--` goes to run_offline_search.py unchanged, except --search_strategy, --seed, --num_samples
and --output_dir, which this script sets per run. The hypervolume is that of (validation error, relative
cost of --objective) with the reference point (1, 1), as plot_pareto.py reports it; a multi-fidelity run's
stopped proposals carry an estimated error and are left out, as they are of its Pareto set.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sub_networks import machine_info  # noqa: E402

import run_offline_search  # noqa: E402
from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.flags import SEARCH_STRATEGIES  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.search.pareto import hypervolume_2d  # noqa: E402
from nas_llm.search.results import is_full_fidelity  # noqa: E402

SET_PER_RUN = ("--search_strategy", "--seed", "--num_samples", "--output_dir", "--log_dir")
CHECKPOINTS = (10, 25, 50, 100, 200, 300)  # numbers of evaluations the summary reports


def run_search(output_dir: Path, searcher: str, seed: int, num_samples: int, search_flags: list[str]) -> dict:
    """One search (resumed or skipped by run_offline_search.py itself); its results."""
    run_dir = output_dir / f"{searcher}_seed{seed}"
    run_offline_search.main([
        *search_flags, "--search_strategy", searcher, "--seed", str(seed), "--num_samples", str(num_samples),
        "--output_dir", str(run_dir), "--log_dir", str(run_dir / "tb"),
    ])
    return json.loads(next(run_dir.glob("results_*.json")).read_text())


def hypervolume_curve(evaluations: list[dict], objective: str) -> list[float]:
    """After each evaluation, the hypervolume of the fully scored sub-networks evaluated so far."""
    found, curve = [], []
    for evaluation in evaluations:
        if is_full_fidelity(evaluation):
            found.append((evaluation["error"], evaluation[objective]))
        curve.append(hypervolume_2d(np.array(found)) if found else 0.0)
    return curve


def loop_seconds(results: dict) -> list[float]:
    """Seconds from the loaded model and data to each evaluation's end (the search loop; loading, the Pareto
    set's test metrics and latencies are the same for every searcher)."""
    loading = results["model_loading_time_s"] + results["data_loading_time_s"]
    return [evaluation["runtime_s"] - loading for evaluation in results["evaluations"]]


def summarise(curves: list[list[float]], seconds: list[list[float]]) -> dict:
    """Mean, lowest and highest hypervolume over seeds at each checkpoint, and the mean search-loop seconds."""
    summary = {}
    for count in CHECKPOINTS:
        if all(len(curve) >= count for curve in curves):
            values = [curve[count - 1] for curve in curves]
            summary[str(count)] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
                                   "seconds": float(np.mean([run[count - 1] for run in seconds]))}
    return summary


def draw(runs: dict[str, list[dict]], objective: str, title: str, output: Path) -> None:
    """Two panels: hypervolume against evaluations and against search-loop seconds, mean and range over seeds.

    The y-axis starts at the lowest searcher's mean after CHECKPOINTS[0] evaluations: the searchers differ by
    hundredths of what the first evaluations gain, which a scale from 0 would flatten into one line."""
    figure, (by_count, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    lowest, highest = np.inf, -np.inf
    for searcher, seeds in runs.items():
        curves = np.array([hypervolume_curve(results["evaluations"], objective) for results in seeds])
        first = min(CHECKPOINTS[0], curves.shape[1]) - 1
        lowest, highest = min(lowest, curves.mean(0)[first]), max(highest, curves.max())
        counts = np.arange(1, curves.shape[1] + 1)
        line, = by_count.plot(counts, curves.mean(0), label=searcher)
        by_count.fill_between(counts, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
        for results, curve in zip(seeds, curves, strict=True):
            by_time.plot(loop_seconds(results), curve, color=line.get_color(), alpha=0.7, linewidth=1)
    by_count.set(xlabel="evaluations", ylabel=f"validation hypervolume (error, {objective})", xscale="log")
    by_time.set(xlabel="search loop (s), one line per seed", xscale="log")
    by_count.legend(loc="lower right")
    margin = 0.05 * (highest - lowest) or 0.01
    by_count.set_ylim(lowest - margin, highest + margin)
    for axis in (by_count, by_time):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)


def parse(argv: list[str]):
    split = argv.index("--") if "--" in argv else len(argv)
    parser = UsageArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, type=Path,
                        help="one folder per searcher and seed, searchers.json and searchers.png go here")
    parser.add_argument("--searchers", nargs="+", default=list(SEARCH_STRATEGIES), choices=list(SEARCH_STRATEGIES),
                        help="the searchers to compare (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="one search per searcher and seed; finished runs are not repeated")
    parser.add_argument("--num_samples", type=int, default=300, help="evaluations per search")
    args = parser.parse_args(argv[:split])  # first, so that --help works without `--`
    if split == len(argv):
        raise UsageError("pass run_offline_search.py's flags after `--` (see this script's docstring)")
    search_flags = argv[split + 1:]
    if set_here := [flag for flag in SET_PER_RUN if flag in search_flags]:
        raise UsageError(f"{', '.join(set_here)} are set per run by this script: give them before `--` or not at all")
    return args, search_flags


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, search_flags = parse(argv)
    runs = {searcher: [run_search(args.output_dir, searcher, seed, args.num_samples, search_flags)
                       for seed in args.seeds] for searcher in args.searchers}
    first = next(iter(runs.values()))[0]
    objective = first["settings"]["objective"]
    seed_count = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}"
    draw(runs, objective, f"{first['task_name']}: {seed_count}, {args.num_samples} evaluations, validation split",
         args.output_dir / "searchers.png")
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/bench_searchers.py", *argv]),
        "machine": machine_info(),
        "objective": objective,
        "hypervolume": {searcher: summarise([hypervolume_curve(r["evaluations"], objective) for r in seeds],
                                            [loop_seconds(r) for r in seeds]) for searcher, seeds in runs.items()},
    }
    write_json_atomic(args.output_dir / "searchers.json", report)
    print(json.dumps(report["hypervolume"], indent=2))


if __name__ == "__main__":
    exit_on_usage_error(main)
