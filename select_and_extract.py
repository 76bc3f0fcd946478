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
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nas_llm.common.arguments import parse_arguments
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.common.io_utils import write_json_atomic
from nas_llm.common.precision import default_device
from nas_llm.data.data import LM_TASK, DataArguments, load_raw_splits, make_dataloader, task_info_for, tokenize_splits
from nas_llm.data.lm_data import LMArguments, load_blocks
from nas_llm.data.metrics import metric_task
from nas_llm.extraction.extract import extract_sub_network, load_extracted, num_parameters, save_extracted
from nas_llm.extraction.model_card import write_model_card
from nas_llm.extraction.recovery import (
    RecoveryArguments,
    check_recovery_possible,
    choose_teacher,
    least_squares_recovery,
    recover,
)
from nas_llm.model.models import load_supernet, load_tokenizer, set_label_names
from nas_llm.model.pruned_structure import STRUCTURE_KEY
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
    from_trial = "trial_checkpoint_dir" in point  # standard NAS: the point's own fine-tuned model
    check_recovery_possible(recovery_args, data_args.task_name == LM_TASK, from_trial)
    if from_trial:
        checkpoint = point["trial_checkpoint_dir"]
        extracted, tokenizer = load_extracted(checkpoint), load_tokenizer(checkpoint)
    else:
        checkpoint = selection_args.checkpoint_dir_model or results["checkpoint_dir_model"]
        model, tokenizer, _ = load_supernet(checkpoint, lm_args.torch_dtype)
        extracted = extract_sub_network(model, sub_network)
    splits_needed = ("train", "validation", "test") if recovery_args.needs_training_split else ("test",)
    if data_args.task_name == LM_TASK:
        tokenized, metrics_key = load_blocks(data_args, lm_args, tokenizer, extracted.config, ("test",)), LM_TASK
    else:
        splits = load_raw_splits(data_args)
        task = task_info_for(splits)
        set_label_names(extracted.config, task.label_names)  # for super-networks trained before they recorded them
        tokenized = tokenize_splits(splits, tokenizer, data_args, splits_needed)
        metrics_key = metric_task(data_args.task_name, task.is_regression)
    loader = make_dataloader(tokenized["test"], tokenizer, selection_args.per_device_eval_batch_size, False, 0)
    test = evaluate(extracted.to(device), loader, metrics_key, device)
    lstsq_recovery = recovery = None
    if recovery_args.recover_lstsq:
        extracted, lstsq_recovery = least_squares_recovery(
            model, sub_network, extracted, tokenized, tokenizer, metrics_key,
            selection_args.per_device_eval_batch_size, recovery_args,
        )
    if recovery_args.recovering:  # the super-network teaches, unless --teacher_model_name_or_path names another
        teacher = choose_teacher(recovery_args, model, checkpoint, data_args.task_name, task, tokenizer.pad_token_id)
        recovery = recover(
            extracted, teacher, tokenized, tokenizer, metrics_key, selection_args.per_device_eval_batch_size,
            recovery_args, selection_args.output_dir,
        )
    if from_trial:  # already a smaller model: copied as the trial saved it
        shutil.copytree(checkpoint, selection_args.output_dir, dirs_exist_ok=True)
        kind = "custom_code" if getattr(extracted.config, STRUCTURE_KEY, None) is not None else "standard"
    else:
        kind = save_extracted(extracted, tokenizer, sub_network, selection_args.output_dir)
    report = {
        "results": selection_args.results,
        "checkpoint_dir_model": checkpoint,
        "pareto_point": {key: value for key, value in point.items() if key != "sub_network"},
        "checkpoint_kind": kind,
        "data": asdict(data_args) | asdict(lm_args),
        "num_parameters": num_parameters(extracted),
        "test_extracted": test,
        "test_recorded_by_search": point.get("test"),  # None: a point off the Pareto set has no test metric
        "matches_search": "test" not in point or all(
            math.isclose(test[name], point["test"][name], rel_tol=1e-4, abs_tol=1e-6) for name in point["test"]
        ),
    }
    if lstsq_recovery is not None:
        report["lstsq_recovery"] = lstsq_recovery
    if recovery is not None:
        report["recovery"] = recovery
    write_model_card(selection_args.output_dir, results, report, sub_network, extracted.config)
    write_json_atomic(Path(selection_args.output_dir) / "extraction.json", report)
    logger.info(
        "Extracted %d parameters (%.1f%% of the unpruned network, %s checkpoint) to %s; test %s (search recorded %s)",
        report["num_parameters"], 100 * point["params"], kind, selection_args.output_dir, test, point.get("test"),
    )
    if not report["matches_search"]:
        logger.warning("the extracted model's test metrics differ from the search's record for this point")


if __name__ == "__main__":
    exit_on_usage_error(main)
