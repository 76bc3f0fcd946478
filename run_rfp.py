"""Retraining-free pruning baseline (Kwon et al. 2022): one pruned model per budget, no training.

On a fine-tuned model (train_supernet.py's --output_dir, e.g. --sampling_strategy standard): the Fisher
information of every head and neuron mask on --num_calibration_samples training examples (regression labels
standardised as in training), then per
budget the mask search and mask rearrangement (rfp.py) and least-squares mask tuning (lstsq.py). Each
budget's model is extracted with its tuned weights into <output_dir>/budget-<b>/, and results_<task>.json
has the schema of run_offline_search.py: plot_pareto.py plots it and select_and_extract.py copies a point's
own checkpoint. Each finished budget is logged at once (evaluations.jsonl, as a search's), so a run stopped
between budgets resumes with the budgets it had finished (minutes of mask tuning each on a CPU).

    python run_rfp.py --checkpoint_dir_model ./finetuned_sst2 --task_name sst2 --budgets 0.4,0.5,0.6,0.7,0.8,0.9 \
        --output_dir ./results_rfp
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import set_seed

from nas_llm.baselines.rfp import BudgetPruner, RFPArguments, UnitCosts
from nas_llm.common.arguments import CostArguments, parse_arguments
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.common.precision import default_device
from nas_llm.data.data import (
    LM_TASK,
    DataArguments,
    absolute_data_flags,
    load_raw_splits,
    make_dataloader,
    task_info_for,
    tokenize_splits,
)
from nas_llm.data.metrics import metric_task
from nas_llm.extraction.lstsq import calibration_batches
from nas_llm.model.cost import CostMeter, check_cost_seq_len
from nas_llm.model.label_scale import label_scale_of, standardised
from nas_llm.model.models import load_supernet
from nas_llm.model.slicing import sliced
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.results import pareto_front, previous_evaluations, results_file_name, write_results
from nas_llm.training.evaluation import evaluate
from nas_llm.training.importance import UnitImportance, mask_gradients

logger = logging.getLogger(__name__)


def run_settings(rfp_args: RFPArguments, data_args: DataArguments, cost_args: CostArguments) -> dict:
    """What must match for the budgets logged in --output_dir to be kept (the budget list may change)."""
    return {
        "checkpoint_dir_model": str(Path(rfp_args.checkpoint_dir_model).resolve()),
        "constraint": rfp_args.constraint,
        "num_calibration_samples": rfp_args.num_calibration_samples,
        "calibration_batch_size": rfp_args.calibration_batch_size,
        "rearrange_masks": rfp_args.rearrange_masks,
        "tune_masks": rfp_args.tune_masks,
        "seed": rfp_args.seed,
        "data": absolute_data_flags(data_args),
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    rfp_args, data_args, cost_args = parse_arguments((RFPArguments, DataArguments, CostArguments), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    if data_args.task_name == LM_TASK:
        raise UsageError("run_rfp.py prunes classifiers; --task_name lm is not supported")
    start_time = time.time()
    set_seed(rfp_args.seed)
    device = default_device()
    model, tokenizer, nas_settings = load_supernet(rfp_args.checkpoint_dir_model)
    model.to(device).eval()
    check_cost_seq_len(cost_args, model.config)

    splits = load_raw_splits(data_args)
    tokenized = tokenize_splits(splits, tokenizer, data_args)
    # regression: the fine-tuned model outputs standardised labels, so its loss (the Fisher scores) needs them too
    batches = [
        standardised(batch, label_scale_of(model.config))
        for batch in calibration_batches(tokenized["train"], tokenizer, rfp_args.num_calibration_samples,
                                         rfp_args.calibration_batch_size, rfp_args.seed)
    ]
    loaders = {
        name: make_dataloader(tokenized[name], tokenizer, rfp_args.per_device_eval_batch_size, False, 0)
        for name in ("validation", "test")
    }
    metrics_key = metric_task(data_args.task_name, task_info_for(splits).is_regression)

    def score(scored: torch.nn.Module, split: str, sub_network: SubNetwork | None = None) -> dict[str, float]:
        return evaluate(scored.to(device), loaders[split], metrics_key, device, sub_network,
                        sliced if sub_network else None)

    gradients = mask_gradients(model, batches)  # one row per calibration batch, for the Fisher blocks
    importance = UnitImportance.from_gradients(gradients)
    unit_costs = UnitCosts.measure(model, rfp_args.constraint, cost_args.cost_seq_len)
    full = SubNetwork.full(*importance.heads.shape, importance.neurons.shape[1])
    cost_meter = CostMeter(model, sliced, cost_args, full)
    output_dir = Path(rfp_args.output_dir)
    log, logged = previous_evaluations(output_dir, run_settings(rfp_args, data_args, cost_args),
                                       rfp_args.overwrite_output_dir)
    finished = {record["budget"]: record for record in logged}
    if logged:
        logger.info("Resumed budgets %s from %s", ", ".join(f"{budget:g}" for budget in finished), log.path)
        start_time -= max(record["elapsed_s"] for record in logged)  # runtime_s counts the earlier sessions too

    pruner = BudgetPruner(rfp_args, model, tokenizer, batches, gradients, importance, unit_costs, cost_meter,
                          score, output_dir)

    def prune(budget: float) -> dict:
        """One budget's record, logged once its checkpoint is written."""
        record = pruner.prune(budget, start_time)
        log.append(record)
        logger.info("budget %g: validation error %.4f (%.4f before tuning), %s %.3f", budget, record["error"],
                    record["error_before_tuning"], rfp_args.constraint, record[rfp_args.constraint])
        return record

    evaluations = [
        {"iteration": iteration} | (finished.get(budget) or prune(budget))
        for iteration, budget in enumerate(tqdm(rfp_args.budget_list, desc="budgets"))
    ]

    non_dominated = set(pareto_front(evaluations, ["error", "params"]))
    # Every budget's model is the method's answer for that budget; plot_pareto.py draws the front from evaluations.
    pareto_set = [record | {"dominated": index not in non_dominated} for index, record in enumerate(evaluations)]
    results = {
        "task_name": data_args.task_name,
        "model_name_or_path": nas_settings.get("model_name_or_path"),
        "checkpoint_dir_model": None,  # every point carries its own tuned checkpoint
        "method": "retraining_free_pruning",
        "sampling_strategy": nas_settings.get("sampling_strategy"),
        "fine_tuned_checkpoint": str(Path(rfp_args.checkpoint_dir_model).resolve()),
        "search_space": "large",
        "search_strategy": "fisher_mask_search" + ("+rearrangement" if rfp_args.rearrange_masks else "")
        + ("+lstsq" if rfp_args.tune_masks else ""),
        "rearrange_masks": rfp_args.rearrange_masks,
        "tune_masks": rfp_args.tune_masks,
        "seed": rfp_args.seed,
        "num_samples": len(evaluations),
        "num_calibration_samples": sum(len(batch["labels"]) for batch in batches),
        "objectives": ["error", "params"],
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
        "device": str(device),
        "settings": {"data": absolute_data_flags(data_args)},  # select_and_extract.py's default data flags
        "unpruned": cost_meter.unpruned | {"validation": score(model, "validation"), "test": score(model, "test")},
        "evaluations": [
            record | {"sub_network": SubNetwork.from_json_dict(record["sub_network"]).summary()}
            for record in evaluations
        ],
        "pareto_indices": sorted(non_dominated),
        "pareto_set": pareto_set,
        "runtime_s": time.time() - start_time,
    }
    write_results(output_dir / results_file_name(data_args.task_name), results)
    logger.info("Unpruned validation error %.4f; results in %s", results["unpruned"]["validation"]["error"],
                output_dir / results_file_name(data_args.task_name))


if __name__ == "__main__":
    exit_on_usage_error(main)
