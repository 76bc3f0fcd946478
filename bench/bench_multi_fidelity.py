"""Benchmark: the exact search against the multi-fidelity search (and both under bf16), side by side.

Runs run_offline_search.py on one super-network with the same searcher, seed and number of proposals:
`exact` (every sub-network scored on the whole validation split, today's default), `multi_fidelity`
(--multi_fidelity True) and, with --bf16, `exact_bf16` and `multi_fidelity_bf16`; with --least_padding,
`exact_least_padding` and (with --bf16 too) `multi_fidelity_bf16_least_padding`, all three. A run whose results
exist is not repeated. Then compares each with `exact`: wall-clock ratio, share of validation examples scored,
validation hypervolume of the (fully scored) Pareto set, and the validation-best sub-network within 30 / 50 /
70% of the encoder-layer parameters: its test metric, against the exact pick's within one standard error
(bootstrap over the test examples, scored again here). bf16 runs also report how far each sub-network's
error moved from fp32 (over the sub-networks both scored fully).

    python bench/bench_multi_fidelity.py --output_dir ./bench_mf --bf16 -- \\
        --model_name_or_path $MINILM --task_name sst2 --data_dir ../shared/data/glue --max_train_samples 2000 \\
        --max_eval_samples 200 --max_test_samples 200 --checkpoint_dir_model ./quickstart/supernet \\
        --search_space small --search_strategy random_search --num_samples 60 --seed 0 \\
        --per_device_eval_batch_size 64

Everything after `--` goes to run_offline_search.py unchanged (any super-network checkpoint, any task but lm).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sub_networks import machine_info  # noqa: E402

import run_offline_search  # noqa: E402
from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.common.precision import default_device  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits  # noqa: E402
from nas_llm.data.metrics import MAIN_METRIC, compute_task_metrics, resampled_errors  # noqa: E402
from nas_llm.model.models import load_supernet  # noqa: E402
from nas_llm.model.slicing import runner_for  # noqa: E402
from nas_llm.model.sub_network import SubNetwork  # noqa: E402
from nas_llm.search.multi_fidelity import BOOTSTRAP_RESAMPLES  # noqa: E402
from nas_llm.search.pareto import hypervolume_2d  # noqa: E402
from nas_llm.search.results import is_full_fidelity  # noqa: E402
from nas_llm.training.evaluation import predict  # noqa: E402

BUDGETS = (0.3, 0.5, 0.7)  # shares of the encoder-layer parameters (the study's)
FIDELITY, BF16, LEAST_PADDING = ["--multi_fidelity", "True"], ["--bf16", "True"], ["--least_padding", "True"]
RUNS = {
    "exact": [],
    "multi_fidelity": FIDELITY,
    "exact_bf16": BF16,
    "multi_fidelity_bf16": FIDELITY + BF16,
    "exact_least_padding": LEAST_PADDING,
    "multi_fidelity_bf16_least_padding": FIDELITY + BF16 + LEAST_PADDING,
}


def run_search(name: str, output_dir: Path, search_flags: list[str]) -> dict:
    """One search (skipped by run_offline_search.py itself when its results exist); its results."""
    run_dir = output_dir / name
    run_offline_search.main([*search_flags, *RUNS[name], "--output_dir", str(run_dir),
                             "--log_dir", str(run_dir / "tb")])
    return json.loads(next(run_dir.glob("results_*.json")).read_text())


def search_loop_s(results: dict) -> float:
    """Seconds from the loaded model and data to the last evaluation: the part the fidelity can shorten (the
    rest is loading, the unpruned network's costs, and the Pareto set's test metrics and latencies)."""
    return results["evaluations"][-1]["runtime_s"] - results["model_loading_time_s"] - results["data_loading_time_s"]


def validation_best(results: dict, budget: float) -> dict | None:
    """The Pareto point with the lowest validation error within `budget` of the encoder-layer parameters."""
    limit = budget * results["unpruned"]["num_layer_parameters"]
    within = [point for point in results["pareto_set"] if point["num_layer_parameters"] <= limit]
    return min(within, key=lambda point: (point["error"], point["num_layer_parameters"]), default=None)


class TestScorer:
    """Scores picks on the test split again, for the standard error of their test metric."""

    def __init__(self, results: dict):
        settings = results["settings"]
        fields = {field.name for field in dataclasses.fields(DataArguments)}
        data_args = DataArguments(**{name: value for name, value in settings["data"].items() if name in fields})
        self.model, tokenizer, _ = load_supernet(settings["checkpoint_dir_model"])
        self.device = default_device()
        self.model.to(self.device).eval()
        test = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args, ("test",))["test"]
        self.loader = make_dataloader(test, tokenizer, 64, False, 0)
        self.task_name, self.run_as = results["task_name"], runner_for(settings["sub_network_execution"])

    def metric_and_standard_error(self, point: dict) -> tuple[float, float]:
        sub_network = SubNetwork.from_json_dict(point["sub_network"])
        predictions, labels = predict(self.model, self.loader, self.device, sub_network, self.run_as)
        metric = compute_task_metrics(self.task_name, predictions, labels)[MAIN_METRIC[self.task_name]]
        rows = np.random.default_rng(0).integers(0, len(labels), size=(BOOTSTRAP_RESAMPLES, len(labels)))
        return metric, float(np.std(resampled_errors(self.task_name, predictions, labels, rows), ddof=1))


def compare(results: dict, exact: dict, scorer: TestScorer, fp32: dict | None) -> dict:
    """One run against the exact search: cost, hypervolume, picks per budget; a bf16 run also against `fp32`,
    the same search in fp32."""
    evaluations = results["evaluations"]
    metric = MAIN_METRIC[results["task_name"]]
    picks = {}
    for budget in BUDGETS:
        pick, exact_pick = validation_best(results, budget), validation_best(exact, budget)
        if pick is None or exact_pick is None:
            picks[str(budget)] = None
            continue
        exact_test, standard_error = scorer.metric_and_standard_error(exact_pick)
        picks[str(budget)] = {
            "iteration": pick["iteration"], "exact_iteration": exact_pick["iteration"],
            "encoder_fraction": pick["num_layer_parameters"] / results["unpruned"]["num_layer_parameters"],
            "validation_error": pick["error"], "test": pick["test"][metric], "exact_test": exact_test,
            "exact_test_standard_error": standard_error,
            "within_one_standard_error": abs(pick["test"][metric] - exact_test) <= standard_error,
        }
    comparison = {
        "runtime_s": results["runtime_s"],
        "wall_clock_ratio": results["runtime_s"] / exact["runtime_s"],
        "search_loop_s": search_loop_s(results),
        "search_loop_ratio": search_loop_s(results) / search_loop_s(exact),
        "fully_scored": sum(map(is_full_fidelity, evaluations)),
        "not_scored_again": sum(e.get("same_as") is not None for e in evaluations),
        "examples_scored_share": float(np.mean([examples_scored(e) for e in evaluations])),
        "validation_hypervolume": hypervolume_2d(np.array([[p["error"], p["params"]] for p in results["pareto_set"]])),
        "picks": picks,
    }
    comparison["hypervolume_minus_exact"] = comparison["validation_hypervolume"] - hypervolume_2d(
        np.array([[p["error"], p["params"]] for p in exact["pareto_set"]]))
    if fp32 is not None:
        comparison["bf16_error_differences"] = error_differences(results, fp32)
    return comparison


def examples_scored(evaluation: dict) -> float:
    """The share of the validation split an evaluation scored: none for a sub-network scored fully before."""
    return 0.0 if evaluation.get("same_as") is not None else evaluation.get("fidelity", 1.0)


def identity(evaluation: dict) -> str:
    """What tells sub-networks apart: the config (every space but `large`, whose records keep only a summary)."""
    return json.dumps(evaluation.get("config", evaluation["sub_network"]), sort_keys=True)


def error_differences(results: dict, reference: dict) -> dict:
    """|bf16 error - fp32 error| of the sub-networks both runs scored fully (an adaptive searcher told other
    errors proposes other sub-networks, so they are matched by their config, not by iteration)."""
    fp32 = {identity(e): e["error"] for e in reference["evaluations"] if is_full_fidelity(e)}
    pairs = [(e["error"], fp32[identity(e)]) for e in results["evaluations"]
             if is_full_fidelity(e) and identity(e) in fp32]
    differences = np.abs(np.subtract(*np.array(pairs).T)) if pairs else np.zeros(0)
    return {"pairs": len(pairs), "max": float(differences.max(initial=0.0)), "mean": float(differences.mean())
            if pairs else 0.0, "changed": int(np.count_nonzero(differences))}


def warm_up(search_flags: list[str]) -> None:
    """Load the super-network once before the timed runs: the first load of a process reads the checkpoint from
    disk and imports what loading needs (2 s of the quickstart's 45 s exact run), which would be charged to the
    first run, the exact search, alone."""
    if "--checkpoint_dir_model" in search_flags:
        load_supernet(search_flags[search_flags.index("--checkpoint_dir_model") + 1])


def fp32_twin(name: str, results: dict) -> dict | None:
    """The results of the same search without bf16, if it ran: what a bf16 run's error differences are taken to."""
    return results.get(name.replace("_bf16", "")) if "_bf16" in name else None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = UsageArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, type=Path,
                        help="one folder per run, and comparison.json")
    parser.add_argument("--bf16", action="store_true", help="also run both searches under bf16 autocast")
    parser.add_argument("--least_padding", action="store_true",
                        help="also run the exact search (and, with --bf16, the multi-fidelity bf16 one) with "
                        "--least_padding True")
    parser.add_argument("--only", nargs="+", choices=[name for name in RUNS if name != "exact"],
                        help="run only these (and `exact`, which every run is compared with), whatever --bf16 and "
                        "--least_padding say: e.g. "
                        "multi_fidelity_bf16_least_padding for the fastest settings alone, which halves the "
                        "benchmark's time and so the time another job on the machine can disturb it")
    args = parser.parse_args(argv[:split])  # first, so that --help works without `--`
    if split == len(argv):
        raise UsageError("pass run_offline_search.py's flags after `--` (see this script's docstring)")
    search_flags = argv[split + 1:]
    if "--output_dir" in search_flags:
        raise UsageError("give --output_dir before `--`: each search writes into a folder of its own under it")
    warm_up(search_flags)
    names = ["exact", *args.only] if args.only else [
        name for name, flags in RUNS.items()
        if (args.bf16 or "--bf16" not in flags) and (args.least_padding or "--least_padding" not in flags)]
    results = {name: run_search(name, args.output_dir, search_flags) for name in names}
    scorer = TestScorer(results["exact"])
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/bench_multi_fidelity.py", *argv]),
        "machine": machine_info(),
        "exact_runtime_s": results["exact"]["runtime_s"],
        "exact_search_loop_s": search_loop_s(results["exact"]),
        "exact_validation_hypervolume": hypervolume_2d(
            np.array([[p["error"], p["params"]] for p in results["exact"]["pareto_set"]])),
        "runs": {name: compare(results[name], results["exact"], scorer, fp32_twin(name, results))
                 for name in names if name != "exact"},
    }
    write_json_atomic(args.output_dir / "comparison.json", report)
    print(json.dumps(report["runs"], indent=2))


if __name__ == "__main__":
    exit_on_usage_error(main)
