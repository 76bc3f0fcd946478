"""Stage 3: pick a Pareto-optimal sub-network under a budget and write it out as a smaller model.

Reads a search's results JSON, selects one Pareto point (by index, or the most accurate one under a cost
budget, or the cheapest one within an error budget), extracts it from the super-network checkpoint as a
genuinely smaller HF checkpoint, and checks on the test split that the extracted model scores what the
search recorded for that point. A point of run_standard_nas.py is already a smaller model, fine-tuned on
its own: its trial's checkpoint is copied instead of extracted.

    python select_and_extract.py --results ./results_nas/results_rte.json --max_params 0.5 \
        --output_dir ./pruned_model

The data flags (--task_name, --data_dir, --max_test_samples, ...) default to those the search recorded.
With --recover_epochs N the extracted model is first fine-tuned on the training split, distilled from the
super-network's full network (recovery.py); with --recover_lstsq True its kept heads and neurons are first
rescaled by least squares (lstsq.py, no training); the checkpoint written is then the recovered one.

Load the result with AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)
(AutoModelForMultipleChoice for --task_name swag; custom code is needed only where the family's config cannot
express the sub-network; see extract.py);
its README.md (model card) says which, with its size, scores and label names.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nas_llm.common.arguments import parse_arguments
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.common.io_utils import write_json_atomic
from nas_llm.common.precision import default_device
from nas_llm.data.data import LM_TASK, DataArguments, make_dataloader
from nas_llm.data.lm_data import LMArguments
from nas_llm.extraction.model_card import write_model_card
from nas_llm.extraction.recovery import RecoveryArguments, check_recovery_possible, recover_as_asked
from nas_llm.extraction.selection import (
    extraction_data,
    extraction_report,
    has_own_weights,
    has_teacher,
    load_chosen,
    log_extraction,
    save_chosen,
    unpruned_source,
)
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.results import evaluated_point, load_results
from nas_llm.training.evaluation import evaluate

logger = logging.getLogger(__name__)


@dataclass
class SelectionArguments:
    results: str = field(
        metadata={"help": "results_<task>.json written by run_offline_search.py (or run_standard_nas.py or run_rfp.py, "
                  "whose Pareto points are taken with their own weights)."}
    )
    output_dir: str = field(default="./pruned_model", metadata={"help": "Where the extracted checkpoint goes."})
    checkpoint_dir_model: str | None = field(
        default=None,
        metadata={"help": "Super-network checkpoint; default: the one recorded in --results (not used for standard NAS "
                  "results)."},
    )
    pareto_index: int | None = field(
        default=None, metadata={"help": "Take this entry of the results' pareto_set (0 = cheapest)."}
    )
    iteration: int | None = field(
        default=None,
        metadata={"help": "Take the search's evaluation of this iteration, Pareto-optimal or not (read from the "
                  "evaluations.jsonl beside --results; its test metric is measured here)."},
    )
    max_params: float | None = field(
        default=None, metadata={"help": "Budget: at most this share of the unpruned parameters (e.g. 0.5)."}
    )
    max_flops: float | None = field(default=None, metadata={"help": "Budget: at most this share of the MACs."})
    max_latency_ms: float | None = field(
        default=None, metadata={"help": "Budget: at most this measured latency (as recorded by the search)."}
    )
    max_relative_error_increase: float | None = field(
        default=None,
        metadata={"help": "Error budget: validation error at most (1 + this) x the unpruned one; the cheapest "
                  "point within it is taken."},
    )
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Batch size of the test evaluation."})


def select_point(results: dict, args: SelectionArguments) -> int:
    """Index into pareto_set: by index, the lowest error under the cost budgets, or the cheapest in the error budget."""
    pareto_set = results["pareto_set"]
    if not pareto_set:
        raise UsageError(f"{args.results} has an empty Pareto set")
    if args.pareto_index is not None:
        if not 0 <= args.pareto_index < len(pareto_set):
            raise UsageError(f"--pareto_index must be in [0, {len(pareto_set) - 1}], got {args.pareto_index}")
        return args.pareto_index
    budgets = {"params": args.max_params, "flops": args.max_flops, "latency_ms": args.max_latency_ms}
    candidates = [
        index for index, point in enumerate(pareto_set)
        if all(limit is None or point[name] <= limit for name, limit in budgets.items())
    ]
    if args.max_relative_error_increase is not None:
        error_limit = results["unpruned"]["validation"]["error"] * (1 + args.max_relative_error_increase)
        candidates = [index for index in candidates if pareto_set[index]["error"] <= error_limit]
        if candidates:
            return min(candidates, key=lambda index: pareto_set[index]["params"])
    if not candidates:
        cheapest = ", ".join(
            f"{name} {min(point[name] for point in pareto_set):.3g}"
            for name, limit in budgets.items()
            if limit is not None
        )
        raise UsageError(
            "no Pareto-optimal sub-network meets the budget"
            + (f" (the cheapest Pareto points have {cheapest})" if cheapest else "")
            + "; relax it or pass --pareto_index"
        )
    if all(limit is None for limit in budgets.values()):
        raise UsageError("choose a sub-network: --pareto_index, or a budget such as --max_params 0.5")
    return min(candidates, key=lambda index: pareto_set[index]["error"])


def recorded_data_flags(argv: list[str]) -> dict:
    """The data flags of the search that wrote --results, as defaults (flags given here still win)."""
    results_flag = argparse.ArgumentParser(add_help=False)
    results_flag.add_argument("--results")
    path = results_flag.parse_known_args(argv)[0].results
    if path is None or not Path(path).is_file():
        return {}
    results = load_results(path)
    return results.get("settings", {}).get("data") or {"task_name": results.get("task_name")}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    selection_args, data_args, lm_args, recovery_args = parse_arguments(
        (SelectionArguments, DataArguments, LMArguments, RecoveryArguments), argv, recorded_data_flags(argv)
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    results = load_results(selection_args.results)
    point = (evaluated_point(selection_args.results, selection_args.iteration) if selection_args.iteration is not None
             else results["pareto_set"][select_point(results, selection_args)])
    sub_network = SubNetwork.from_json_dict(point["sub_network"])

    device = default_device()
    check_recovery_possible(recovery_args, data_args.task_name == LM_TASK, has_own_weights(point),
                            has_teacher(point, results))
    checkpoint, supernet, extracted, tokenizer = load_chosen(
        point, sub_network, results, selection_args.checkpoint_dir_model, lm_args.torch_dtype
    )
    tokenized, metrics_key, task = extraction_data(
        data_args, lm_args, tokenizer, extracted, recovery_args.needs_training_split
    )
    loader = make_dataloader(tokenized["test"], tokenizer, selection_args.per_device_eval_batch_size, False, 0)
    test = evaluate(extracted.to(device), loader, metrics_key, device)
    extracted, lstsq_recovery, recovery = recover_as_asked(
        recovery_args, supernet, sub_network, extracted, unpruned_source(point, results, checkpoint),
        data_args.task_name, task, tokenized, tokenizer, metrics_key, selection_args.per_device_eval_batch_size,
        selection_args.output_dir,
    )
    kind = save_chosen(extracted, tokenizer, sub_network, point, selection_args.output_dir, recovery is not None)
    report = extraction_report(
        selection_args.results, checkpoint, point, kind, data_args, lm_args, extracted, test, lstsq_recovery, recovery
    )
    write_model_card(selection_args.output_dir, results, report, sub_network, extracted.config)
    write_json_atomic(Path(selection_args.output_dir) / "extraction.json", report)
    log_extraction(report, point, selection_args.output_dir)


if __name__ == "__main__":
    exit_on_usage_error(main)
