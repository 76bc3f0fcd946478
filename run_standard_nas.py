"""Standard NAS: fine-tune every sampled sub-network on its own, with Syne Tune, for the baseline front.

The weight-sharing pipeline trains one super-network and scores sub-networks without training them;
standard NAS instead fine-tunes each sub-network from the pre-trained weights (standard_nas_trial.py),
which costs far more. Syne Tune's Tuner runs the trials on the LocalBackend (`--n_workers` at a time)
with multi-objective ASHA or random search over (validation error, relative parameters), until
`--num_samples` trials ran or `--max_wallclock_time` passed. The results file has the schema of
run_offline_search.py, so plot_pareto.py and select_and_extract.py read it as they read a search's.

    python run_standard_nas.py --model_name_or_path bert-base-cased --task_name rte --search_space small \
        --scheduler moasha --max_epochs 3 --n_workers 4 --max_wallclock_time 36000 --output_dir ./standard_nas
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from transformers import set_seed

from nas_llm.baselines.standard_nas import (
    ARGUMENTS,
    EPOCH,
    SETTINGS_FILE,
    SETTINGS_KEY,
    check_training_flags,
    drop_epoch_checkpoints,
    epoch_checkpoint,
    make_scheduler,
    max_epochs,
    prepare_output_dir,
    run_trials,
    trial_records,
)
from nas_llm.common.arguments import TrainingArguments, parse_arguments
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.common.io_utils import write_json_atomic
from nas_llm.common.precision import default_device
from nas_llm.data.data import (
    LM_TASK,
    absolute_data_flags,
    load_raw_splits,
    make_dataloader,
    task_info_for,
    tokenize_splits,
)
from nas_llm.data.metrics import metric_task
from nas_llm.extraction.extract import load_extracted
from nas_llm.model.cost import CostMeter, check_cost_seq_len
from nas_llm.model.models import load_model, load_tokenizer, resolve_model_name
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import runner_for
from nas_llm.search.results import pareto_front, results_file_name, write_results
from nas_llm.search.searchers import plain_value
from nas_llm.training.evaluation import evaluate

logger = logging.getLogger(__name__)
TRIAL_SCRIPT = Path(__file__).resolve().parent / "standard_nas_trial.py"
VALIDATION_PREFIX = "validation_"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, nas_args, training_args, cost_args, nas_run_args = parse_arguments(ARGUMENTS, argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    start_time = time.time()
    check_training_flags(training_args)
    if data_args.task_name == LM_TASK:
        raise UsageError(
            "run_standard_nas.py fine-tunes classifiers; for --task_name lm run train_supernet.py (with "
            "--sampling_strategy none to search the pre-trained weights) and run_offline_search.py"
        )
    if training_args.output_dir == TrainingArguments.output_dir:
        raise UsageError("pass --output_dir: the folder for the trials and results of this standard-NAS run")
    epochs = max_epochs(nas_run_args, training_args)
    output_dir = Path(training_args.output_dir).resolve()
    results_path = output_dir / results_file_name(data_args.task_name)
    prepare_output_dir(output_dir, results_path, nas_run_args.overwrite_output_dir)
    set_seed(training_args.seed)
    device = default_device()

    # The pre-trained model with the task's head: the search space and the costs of every trial's sub-network.
    splits = load_raw_splits(data_args)
    task = task_info_for(splits)
    model_name = resolve_model_name(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_name, model_args.cache_dir)
    model = load_model(
        model_name, task.label_names, tokenizer, model_args.cache_dir, multiple_choice=task.multiple_choice
    ).to(device).eval()
    check_cost_seq_len(cost_args, model.config)
    search_space = make_search_space(nas_args.search_space, model.config)
    cost_meter = CostMeter(model, runner_for(nas_args.sub_network_execution), cost_args, search_space.largest())

    settings_path = output_dir / SETTINGS_FILE
    write_json_atomic(settings_path, {"argv": argv})
    settings_entry = {SETTINGS_KEY: str(settings_path)}
    scheduler = make_scheduler(
        nas_run_args.scheduler, search_space.config_space | settings_entry,
        search_space.to_config(search_space.largest()) | settings_entry, epochs, nas_run_args.reduction_factor,
        nas_run_args.num_samples, training_args.seed,
    )
    tuner_start = time.time()
    backend, reports = run_trials(TRIAL_SCRIPT, scheduler, nas_run_args, output_dir)
    wallclock_s = time.time() - tuner_start

    trials = trial_records(reports.results, list(search_space.config_space), epochs)
    if not trials:
        raise UsageError("no trial finished an epoch within the budget; raise --max_wallclock_time")
    test_split = tokenize_splits(splits, tokenizer, data_args, ("test",))["test"]
    loader = make_dataloader(test_split, tokenizer, training_args.per_device_eval_batch_size, False, 0)
    metrics_key = metric_task(data_args.task_name, task.is_regression)

    def test_metrics(checkpoint: str) -> dict[str, float]:
        """The trial's own fine-tuned model on the test split."""
        return evaluate(load_extracted(checkpoint).to(device), loader, metrics_key, device)

    evaluations = []
    for iteration, trial in enumerate(trials):
        sub_network = search_space.to_sub_network(trial.config)
        costs = cost_meter.measure(sub_network, with_latency=False)
        record = {
            "iteration": iteration,
            "trial_id": trial.trial_id,
            "error": trial.last["error"],
            "validation": {
                key.removeprefix(VALIDATION_PREFIX): value
                for key, value in trial.last.items() if key.startswith(VALIDATION_PREFIX)
            },
            **cost_meter.relative(costs),
            **costs,
            "sub_network": sub_network.summary(),
            "epochs": trial.last[EPOCH],
            "stopped_early": trial.stopped_by_scheduler,
            "learning_curve": [report["error"] for report in trial.reports],
            "runtime_s": trial.last["elapsed_s"],
            "trial_checkpoint_dir": str(epoch_checkpoint(backend.checkpoint_trial_path(trial.trial_id),
                                                         trial.last[EPOCH])),
        }
        if search_space.name != "large":
            record["config"] = {key: plain_value(value) for key, value in trial.config.items()}
        evaluations.append(record)

    pareto = pareto_front(evaluations, ["error", "params"], order_by="params")
    pareto_set = []
    for index in pareto:
        record = evaluations[index]
        sub_network = search_space.to_sub_network(trials[index].config)
        costs = cost_meter.measure(sub_network, with_latency=True)
        pareto_set.append({
            "iteration": index,
            "trial_id": record["trial_id"],
            "error": record["error"],
            **cost_meter.relative(costs),
            **costs,
            "test": test_metrics(record["trial_checkpoint_dir"]),
            "sub_network": sub_network.to_json_dict(),
            "epochs": record["epochs"],
            "trial_checkpoint_dir": record["trial_checkpoint_dir"],
        })

    unpruned = dict(cost_meter.unpruned)
    kept_trials = {record["trial_id"] for record in pareto_set}
    if trials[0].trial_id == 0:  # the first trial fine-tunes the unpruned network (standard_nas.UnprunedFirst)
        first = evaluations[0]
        unpruned |= {
            "validation": first["validation"], "test": test_metrics(first["trial_checkpoint_dir"]),
            "epochs": first["epochs"], "trial_checkpoint_dir": first["trial_checkpoint_dir"],
        }
        kept_trials.add(0)
        if first["epochs"] < epochs:
            logger.warning("the unpruned network trained %d of %d epochs only", first["epochs"], epochs)
    for trial in trials:  # only the weights worth extracting are kept: the recorded epoch of the kept trials
        recorded = trial.last[EPOCH] if trial.trial_id in kept_trials else None
        checkpoint_dir = backend.checkpoint_trial_path(trial.trial_id)
        drop_epoch_checkpoints(checkpoint_dir, keep=lambda epoch, kept=recorded: epoch == kept)

    results = {
        "task_name": data_args.task_name,
        "model_name_or_path": model_name,
        "checkpoint_dir_model": None,  # every Pareto point carries its own trial_checkpoint_dir
        "method": "standard_nas",
        "sampling_strategy": "standard NAS",
        "search_space": nas_args.search_space,
        "search_strategy": nas_run_args.scheduler,
        "seed": training_args.seed,
        "num_samples": len(evaluations),
        "max_epochs": epochs,
        "n_workers": nas_run_args.n_workers,
        "objectives": ["error", "params"],
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
        "device": str(device),
        "settings": {"data": absolute_data_flags(data_args)},  # select_and_extract.py's default data flags
        "unpruned": unpruned,
        "evaluations": evaluations,
        "pareto_indices": pareto,
        "pareto_set": pareto_set,
        "wallclock_s": wallclock_s,
        "device_hours": sum(record["runtime_s"] for record in evaluations) / 3600,
        "runtime_s": time.time() - start_time,
    }
    write_results(results_path, results)
    logger.info(
        "%d trials (%d stopped early by %s) in %.0f s, %.3f %s-hours; results in %s", len(evaluations),
        sum(record["stopped_early"] for record in evaluations), nas_run_args.scheduler, wallclock_s,
        results["device_hours"], device.type.upper() if device.type == "cpu" else "GPU", results_path,
    )


if __name__ == "__main__":
    exit_on_usage_error(main)
