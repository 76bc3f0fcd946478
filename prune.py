"""One command from a model and a task to shipped small models: the GLUE study's best recipe, end to end.

    python prune.py --model_name_or_path M --task_name T [--data_dir D] --budgets 0.3,0.5,0.7 --output_dir OUT

Runs, each stage as its own entry script with a log in OUT/logs/: fine-tuning of a teacher (or
--teacher_model_name_or_path), super-network training with the recipe of row (e) of the GLUE study
(docs/benchmarks/09-glue-study-v2.md: one_shot, importance ordering, the teacher's logits and hidden states,
budget-aware sampling; within 0.004 validation hypervolume of the best row on SST-2, STS-B and MRPC and the best pick
at <= 50% of the encoder on STS-B and MRPC), the search, retraining-free pruning of the teacher (the cheap baseline),
and per budget the extraction and recovery of the search's validation-best sub-network and of RFP's model. Per budget
the candidate with the lower validation error, searched or RFP, ships to OUT/models/budget-<b>/; OUT/summary.json,
report.html and pareto.png say what each scored.

Budgets are shares of --budget_on: encoder (default: the transformer layers' parameters, as the study reports),
params (all parameters, embeddings included), flops (MACs) or latency. Any other flag of the stage scripts passes
through to the stages that take it (--num_train_epochs 1, --search_strategy local_search, --max_train_samples 2000,
--recover_epochs 1, ...; docs/flags.md). Rerunning the same command after a stop continues where it stopped;
adding a budget runs only that budget's extraction and recovery. Causal LMs (--task_name lm) ship the search's
sub-network without recovery or RFP (neither applies to them yet). See docs/prune.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error
from nas_llm.search.budgets import BUDGET_MEASURES

REPORT_FILE, PARETO_PNG, SUMMARY_FILE = "report.html", "pareto.png", "summary.json"
FINISHED_FILE = "finished_command.json"  # the arguments of the last run that finished every stage
OWN_FLAGS = {"model_name_or_path", "task_name", "budgets", "budget_on", "output_dir", "teacher_model_name_or_path",
             "seed_search_with_rfp", "ties_within_noise", "overwrite_output_dir"}
OUTPUT_FOLDERS = ("teacher", "supernet", "search", "rfp", "candidates", "models", "logs", "tb")


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = sorted({float(value) for value in text.split(",")})
    except ValueError:
        raise UsageError(f"--budgets must be comma-separated shares such as 0.3,0.5,0.7, got '{text}'") from None
    if not all(0 < budget <= 1 for budget in budgets):
        raise UsageError(f"every --budgets value must lie in (0, 1], got {text}")
    return budgets


def parse(argv: list[str]) -> tuple:
    """(pipeline.PipelineSettings, whether to start afresh)."""
    from nas_llm.pipeline.stages import PipelineSettings, pass_through_flags

    parser = UsageArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python prune.py --model_name_or_path M --task_name T --output_dir OUT [--budgets B,...] "
              "[--budget_on {encoder,params,flops,latency}] [stage flags ...]")
    parser.add_argument("--model_name_or_path", required=True, help="Pre-trained model: hub id or local directory.")
    parser.add_argument("--task_name", required=True, help="GLUE task (sst2, stsb, ...), imdb, swag or lm.")
    parser.add_argument("--budgets", default="0.3,0.5,0.7", help="Comma-separated shares of --budget_on; one "
                        "shipped model each (default: 0.3,0.5,0.7).")
    parser.add_argument("--budget_on", default="encoder", choices=list(BUDGET_MEASURES),
                        help="What a budget limits, relative to the unpruned model (default: encoder, the "
                        "transformer layers' parameters).")
    parser.add_argument("--output_dir", required=True, help="Where every stage and the shipped models go.")
    parser.add_argument("--teacher_model_name_or_path", help="A fine-tuned full model (train_supernet.py "
                        "--sampling_strategy standard) to use as teacher instead of fine-tuning one.")
    parser.add_argument("--seed_search_with_rfp", default="False", choices=["True", "False"],
                        help="Run retraining-free pruning before the search and score its masks first, with the "
                        "super-network's weights (run_offline_search.py --initial_sub_networks).")
    parser.add_argument("--ties_within_noise", default="False", choices=["True", "False"],
                        help="Within each budget, extract the largest of the search's sub-networks whose validation "
                        "error is above the best one's by at most one standard error of the difference, paired over "
                        "the validation examples, instead of the best one itself (the search keeps its predictions: "
                        "run_offline_search.py --record_validation_predictions True).")
    parser.add_argument("--overwrite_output_dir", default="False", choices=["True", "False"],
                        help="Delete the earlier run's stages in --output_dir and start afresh.")
    stage_flags = parser.add_argument_group("flags of the stage scripts, passed to the stages that take them "
                                            "(docs/flags.md has each one's help)")
    for name, stages in pass_through_flags().items():
        if name in OWN_FLAGS:
            continue
        stage_flags.add_argument(f"--{name}", nargs="?", const="True", default=argparse.SUPPRESS, metavar="VALUE",
                                 help="to " + ", ".join(stages))
    args = parser.parse_args(argv)
    settings = PipelineSettings(
        model_name_or_path=args.model_name_or_path, task_name=args.task_name, budgets=parse_budgets(args.budgets),
        output_dir=Path(args.output_dir), budget_on=args.budget_on,
        teacher_model_name_or_path=args.teacher_model_name_or_path,
        seed_search_with_rfp=args.seed_search_with_rfp == "True", ties_within_noise=args.ties_within_noise == "True",
        pass_through={f"--{name}": value
                      for name, value in vars(args).items() if name not in OWN_FLAGS},
    )
    return settings, args.overwrite_output_dir == "True"


def remove_earlier_run(output_dir: Path) -> None:
    """--overwrite_output_dir: only what prune.py writes goes, nothing else the folder may hold."""
    for name in OUTPUT_FOLDERS:
        shutil.rmtree(output_dir / name, ignore_errors=True)
    for name in (SUMMARY_FILE, REPORT_FILE, PARETO_PNG, "stages.json", FINISHED_FILE):
        (output_dir / name).unlink(missing_ok=True)


def write_outputs(pipeline, summary: dict) -> None:
    """report.html and pareto.png from the search's and RFP's results."""
    from nas_llm.pipeline.stages import PROJECT_DIR
    from nas_llm.search.report import results_points, write_report

    results = {"search": pipeline.search_results(), "retraining-free pruning": pipeline.rfp_results()}
    results = {label: path for label, path in results.items() if path.is_file()}
    point_sets = {label: results_points(path, label) for label, path in results.items()}
    write_report(pipeline.out / REPORT_FILE, f"{summary['model_name_or_path']} on {summary['task_name']}: "
                 f"pruned with prune.py", point_sets, summary["unpruned"], summary["budgets"])
    labels = list(results)
    with pipeline.log("report").open("w") as log:
        subprocess.run([sys.executable, "plot_pareto.py", *map(str, results.values()), "--labels", *labels,
                        "--output", str(pipeline.out / PARETO_PNG)], cwd=PROJECT_DIR, stdout=log,
                       stderr=subprocess.STDOUT, check=True)


def finished_output_dir(argv: list[str]) -> Path | None:
    """The --output_dir of a finished run of exactly these arguments, found without loading torch: a rerun of a
    finished run answers in about a second."""
    output_dir = argparse.ArgumentParser(add_help=False)
    output_dir.add_argument("--output_dir")
    path = output_dir.parse_known_args(argv)[0].output_dir
    finished = Path(path or ".") / FINISHED_FILE
    if path is None or not finished.is_file() or json.loads(finished.read_text()) != argv:
        return None
    return Path(path) if (Path(path) / SUMMARY_FILE).is_file() else None


def run(argv: list[str]) -> Path:
    """Every stage that has not finished, then the report; returns the output directory."""
    from nas_llm.common.io_utils import write_json_atomic
    from nas_llm.pipeline.stages import Pipeline  # torch and the stage scripts' argument classes: only for a run

    settings, overwrite = parse(argv)
    if overwrite:
        remove_earlier_run(settings.output_dir)
    pipeline = Pipeline(settings)
    summary = pipeline.run_all()
    write_json_atomic(pipeline.out / SUMMARY_FILE, summary)
    write_outputs(pipeline, summary)
    write_json_atomic(pipeline.out / FINISHED_FILE, argv)
    return pipeline.out


def main(argv: list[str] | None = None) -> None:
    start = time.time()
    argv = sys.argv[1:] if argv is None else list(argv)
    output_dir = finished_output_dir(argv)
    done = "already finished; nothing to run" if output_dir else "finished"
    output_dir = output_dir or run(argv)
    summary = json.loads((output_dir / SUMMARY_FILE).read_text())
    print(f"{done} in {time.time() - start:.1f} s: models in {output_dir / 'models'}, "
          f"{output_dir / SUMMARY_FILE}, {output_dir / REPORT_FILE}")
    for row in summary["budgets"]:
        test = ", ".join(f"{name} {value:.4f}" for name, value in row["test"].items())
        print(f"  budget {row['budget']:g} of the {row['budget_on']}: {row['method']}, "
              f"{row['num_parameters']:,} parameters, test {test} -> {row['model_dir']}")


if __name__ == "__main__":
    exit_on_usage_error(main)
