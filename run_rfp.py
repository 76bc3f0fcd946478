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

from tqdm.auto import tqdm
from transformers import set_seed

from nas_llm.baselines.rfp import (
    ModelScorer,
    RFPArguments,
    calibration_data,
    finished_budgets,
    make_pruner,
    rfp_results,
    run_settings,
)
from nas_llm.common.arguments import CostArguments, parse_arguments
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.common.precision import default_device
from nas_llm.data.data import (
    LM_TASK,
    DataArguments,
    evaluation_loaders,
    load_raw_splits,
    task_info_for,
    tokenize_splits,
)
from nas_llm.data.metrics import metric_task
from nas_llm.model.cost import check_cost_seq_len
from nas_llm.model.models import load_supernet
from nas_llm.search.results import results_file_name, write_results

logger = logging.getLogger(__name__)


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
    batches = calibration_data(model, tokenized["train"], tokenizer, rfp_args)
    scorer = ModelScorer(
        evaluation_loaders(tokenized, tokenizer, rfp_args.per_device_eval_batch_size),
        metric_task(data_args.task_name, task_info_for(splits).is_regression), device,
    )
    pruner = make_pruner(rfp_args, cost_args, model, tokenizer, batches, scorer.score)
    output_dir = Path(rfp_args.output_dir)
    log, finished, earlier_s = finished_budgets(
        output_dir, run_settings(rfp_args, data_args, cost_args), rfp_args.overwrite_output_dir
    )
    start_time -= earlier_s  # runtime_s counts the earlier sessions too

    evaluations = [
        {"iteration": iteration} | (finished.get(budget) or pruner.prune_and_log(budget, start_time, log))
        for iteration, budget in enumerate(tqdm(rfp_args.budget_list, desc="budgets"))
    ]
    results = rfp_results(rfp_args, data_args, cost_args, nas_settings, evaluations, pruner, device, start_time)
    write_results(output_dir / results_file_name(data_args.task_name), results)
    logger.info("Unpruned validation error %.4f; results in %s", results["unpruned"]["validation"]["error"],
                output_dir / results_file_name(data_args.task_name))


if __name__ == "__main__":
    exit_on_usage_error(main)
