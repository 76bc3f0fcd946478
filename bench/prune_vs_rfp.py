"""prune.py's two candidates per budget, the search's pick and retraining-free pruning's, compared on the same test
examples, before and after recovery (issue 32's acceptance, in the GLUE study's goal-line form).

prune.py extracts, per budget, the search's validation-best sub-network and RFP's model and recovers both alike;
its summary.json says what each scored. This adds what a comparison needs: each candidate's per-example test
predictions (before recovery: the sub-network with the super-network's weights, or RFP's tuned model; after: the
recovered checkpoint), the paired standard error of their difference (bench/study_glue.py's rule: a cell below RFP by
less than one standard error is a tie), and the normalised relative performance against the fine-tuned teacher and
the trivial predictor. The super-network's full network is reported beside the teacher (issue 32, item 6).

    python bench/prune_vs_rfp.py /work/runs/stsb_imp --output docs/benchmarks/run.md

Predictions are written to <run>/rfp_comparison/ once (a rerun reads them); every candidate's recomputed test metric
must equal the one its extraction.json records, or the script stops.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import datasets
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_glue import (  # noqa: E402
    COMPARED_BUDGETS,
    COMPARED_METRIC,
    GOAL_HEADING,
    compare_predictions,
    predictions_on_test,
    relative_performance,
    rfp_line,
    target_outcome,
)

from nas_llm.common.errors import UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic, write_text_atomic  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits  # noqa: E402
from nas_llm.data.metrics import MAIN_METRIC, trivial_metrics  # noqa: E402
from nas_llm.extraction.extract import SUB_NETWORK_FILE, load_extracted  # noqa: E402
from nas_llm.extraction.selection import load_chosen, shipped_test_metrics  # noqa: E402
from nas_llm.model.models import load_tokenizer  # noqa: E402
from nas_llm.model.sub_network import SubNetwork  # noqa: E402
from nas_llm.search.results import load_results  # noqa: E402

STAGES = ("before", "after")  # recovery
EVAL_BATCH_SIZE = 128
METHODS = ("search", "rfp")
SHIPPED_NAMES = {"search": "search", "rfp": "RFP + recovery"}


def candidate_model(candidate_dir: Path, stage: str) -> tuple:
    """The candidate's model and tokenizer before recovery (as the search or RFP left it) or after (the checkpoint
    prune.py wrote)."""
    if stage == "after":
        return load_extracted(candidate_dir), load_tokenizer(str(candidate_dir))
    extraction = json.loads((candidate_dir / "extraction.json").read_text())
    sub_network = SubNetwork.from_json_dict(json.loads((candidate_dir / SUB_NETWORK_FILE).read_text()))
    _, _, model, tokenizer = load_chosen(extraction["pareto_point"], sub_network, load_results(extraction["results"]),
                                         extraction["checkpoint_dir_model"], None)
    return model, tokenizer


def recorded_test(candidate_dir: Path, stage: str) -> dict[str, float]:
    """What extraction.json records for the candidate before recovery, or for the checkpoint it shipped after."""
    extraction = json.loads((candidate_dir / "extraction.json").read_text())
    return shipped_test_metrics(extraction) if stage == "after" else extraction["test_extracted"]


def candidate_predictions(candidate_dir: Path, stage: str, data_args: DataArguments, splits: datasets.DatasetDict,
                          cache: Path) -> dict:
    """Per-example test predictions and labels of one candidate, computed once and checked against its record; a
    cache that no longer matches the record (the stage was run again since) is computed again."""
    recorded = recorded_test(candidate_dir, stage)
    cached = json.loads(cache.read_text()) if cache.is_file() else None
    if cached is not None and not mismatches(cached["test"], recorded):
        return cached
    scored = predictions_on_test(*candidate_model(candidate_dir, stage), data_args, EVAL_BATCH_SIZE, splits)
    if wrong := mismatches(scored["test"], recorded):
        name = wrong[0]
        raise SystemExit(f"{candidate_dir} ({stage} recovery): test {name} recomputed as {scored['test'][name]}, "
                         f"extraction.json records {recorded[name]}; the comparison would not be of the shipped "
                         "candidates")
    write_json_atomic(cache, scored)
    return scored


def mismatches(scored: dict[str, float], recorded: dict[str, float]) -> list[str]:
    """The recorded test metrics that `scored` does not reproduce."""
    return [name for name, value in recorded.items()
            if name in scored and not math.isclose(scored[name], value, rel_tol=1e-4, abs_tol=1e-5)]


def compare_budget(run: Path, row: dict, data_args: DataArguments, splits: datasets.DatasetDict, metric: str) -> dict:
    """The search's pick against RFP's within one budget, before and after recovery."""
    budget = row["budget"]
    cells = {}
    for stage in STAGES:
        scored = {}
        for method in METHODS:
            candidate = run / "candidates" / f"budget-{budget:g}" / method
            if not (candidate / "extraction.json").is_file():
                break
            cache = run / "rfp_comparison" / f"budget-{budget:g}-{method}-{stage}.json"
            scored[method] = candidate_predictions(candidate, stage, data_args, splits, cache)
        if len(scored) < len(METHODS):
            cells[stage] = {"outcome": "not measured", "reason": f"no {', '.join(set(METHODS) - set(scored))} "
                            f"candidate within {budget:g}"}
            continue
        labels = np.array(scored["search"]["labels"])
        if scored["rfp"]["labels"] != scored["search"]["labels"]:
            raise SystemExit(f"budget {budget:g}: the two candidates were scored on different test examples")
        cells[stage] = compare_predictions(data_args.task_name, metric, np.array(scored["search"]["predictions"]),
                                           np.array(scored["rfp"]["predictions"]), labels)
    return cells


def budget_line(task: str, run: Path, row: dict, unpruned: dict, main_metric: str, teacher_test: float,
                trivial: float) -> str:
    """bench/study_glue.py's per-budget goal line, for the search's recovered pick."""
    budget = row["budget"]
    if "search" not in row["candidates"]:
        return f"- {task}: no sub-network within {budget:.0%} of the encoder parameters was found"
    test = row["candidates"]["search"]["test"][main_metric]
    point = json.loads((run / "candidates" / f"budget-{budget:g}" / "search" / "extraction.json").read_text()
                       )["pareto_point"]
    shares = (point["num_layer_parameters"] / unpruned["num_layer_parameters"],
              point["num_parameters"] / unpruned["num_parameters"])
    relative = relative_performance(test, teacher_test, trivial)
    outcome = target_outcome(task, budget, relative["normalised"])
    return (f"- {task}: at ≤{budget:.0%} encoder parameters, the search + recovery selects a sub-network with "
            f"{shares[0]:.0%} of the encoder ({shares[1]:.0%} of all parameters), test {main_metric} {test:.4f} vs "
            f"unpruned {teacher_test:.4f}: normalised {relative['normalised']:.2f}, raw {relative['raw']:.2f} "
            f"→ {outcome}")


def rfp_goal_line(task: str, comparisons: dict[float, dict], metric: str) -> str:
    """bench/study_glue.py's line: at how many compared budgets the search's pick is at least RFP's."""
    missing = {"outcome": "not measured", "reason": "budget not run"}
    cells = {budget: comparisons.get(budget, {"before": missing, "after": missing}) for budget in COMPARED_BUDGETS}
    return "- " + rfp_line(task, cells, metric)


def table(comparisons: dict[float, dict], metric: str, shipped: dict[float, str]) -> list[str]:
    """The comparison per budget, and which candidate prune.py shipped there (the lower validation error): what a
    user of the pipeline gets, beside what the search alone achieves."""
    lines = ["| budget | before: search / RFP (difference ± SE, outcome) | after: search / RFP + recovery "
             "(difference ± SE, outcome) | prune.py ships |", "|---|---|---|---|"]
    for budget, cells in comparisons.items():
        row = []
        for stage in STAGES:
            cell = cells[stage]
            row.append(f"not measured: {cell['reason']}" if cell["outcome"] == "not measured" else
                       f"{cell['test']:.4f} / {cell['rfp_test']:.4f} ({cell['difference']:+.4f} ± "
                       f"{cell['standard_error']:.4f}, {cell['outcome']})")
        lines.append(f"| ≤ {budget:.0%} | {row[0]} | {row[1]} | {SHIPPED_NAMES[shipped[budget]]} |")
    return lines


def report(run: Path) -> tuple[str, dict]:
    summary = json.loads((run / "summary.json").read_text())
    task = summary["task_name"]
    if summary["budget_on"] != "encoder":
        raise UsageError(f"{run} budgets {summary['budget_on']}; the study's comparison is by share of the encoder")
    first = next(row for row in summary["budgets"] if row["candidates"])
    extraction = json.loads(next((run / "candidates" / f"budget-{first['budget']:g}").glob("*/extraction.json"))
                            .read_text())
    data_args = DataArguments(**{key: value for key, value in extraction["data"].items()
                                 if key in DataArguments.__dataclass_fields__})
    metric, main_metric = COMPARED_METRIC.get(task, MAIN_METRIC[task]), MAIN_METRIC[task]
    splits = load_raw_splits(data_args)  # once: every candidate is scored on its test split
    comparisons = {row["budget"]: compare_budget(run, row, data_args, splits, metric) for row in summary["budgets"]}
    shipped = {row["budget"]: row["method"] for row in summary["budgets"]}
    teacher = json.loads((Path(summary["teacher"]) / "results.json").read_text())
    supernet = json.loads((run / "supernet" / "results.json").read_text())
    trivial = trivial_metrics(task, np.array(splits["train"]["label"]), np.array(splits["test"]["label"]))
    lines = [f"Run: `{run}` ({task}; search seeded with RFP: {summary.get('search_seeded_with_rfp', False)}). "
             f"Test {main_metric}: teacher (fine-tuned) {teacher['test'][main_metric]:.4f}, the super-network's full "
             f"network {supernet['test'][main_metric]:.4f}, trivial predictor {trivial[main_metric]:.4f}.", "",
             *table(comparisons, metric, shipped), "", GOAL_HEADING, ""]
    lines += [budget_line(task, run, row, summary["unpruned"], main_metric, teacher["test"][main_metric],
                          trivial[main_metric]) for row in summary["budgets"]]
    lines.append(rfp_goal_line(task, comparisons, metric))
    record = {"run": str(run), "task": task, "metric": metric, "teacher_test": teacher["test"],
              "supernet_full_test": supernet["test"], "trivial_test": trivial,
              "comparisons": {f"{budget:g}": cells for budget, cells in comparisons.items()},
              "shipped": {f"{budget:g}": method for budget, method in shipped.items()}}
    return "\n".join(lines) + "\n", record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished prune.py --output_dir")
    parser.add_argument("--output", type=Path, help="also write the markdown here, and its record beside it (.json)")
    args = parser.parse_args(argv)
    if not (args.run / "summary.json").is_file():
        raise UsageError(f"{args.run} holds no summary.json; pass the --output_dir of a finished prune.py run")
    markdown, record = report(args.run)
    print(markdown)
    if args.output:
        write_text_atomic(args.output, markdown)
        write_json_atomic(args.output.with_suffix(".json"), record)


if __name__ == "__main__":
    exit_on_usage_error(main)
