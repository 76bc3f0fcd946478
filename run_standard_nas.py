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
    TrialTester,
    check_run_flags,
    keep_recorded_checkpoints,
    max_epochs,
    pareto_set_with_test,
    prepare_output_dir,
    standard_nas_results,
    trial_evaluations,
    tune,
    unpruned_reference,
)
from nas_llm.common.arguments import parse_arguments
from nas_llm.common.errors import exit_on_usage_error
from nas_llm.common.precision import default_device
from nas_llm.data.data import load_raw_splits, make_dataloader, task_info_for, tokenize_splits
from nas_llm.data.metrics import metric_task
from nas_llm.model.cost import CostMeter, check_cost_seq_len
from nas_llm.model.models import load_model, load_tokenizer, resolve_model_name
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import runner_for
from nas_llm.search.results import results_file_name, write_results

logger = logging.getLogger(__name__)
TRIAL_SCRIPT = Path(__file__).resolve().parent / "standard_nas_trial.py"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, nas_args, training_args, cost_args, nas_run_args = parse_arguments(ARGUMENTS, argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    start_time = time.time()
    check_run_flags(data_args, training_args)
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

    backend, trials, wallclock_s = tune(
        TRIAL_SCRIPT, argv, search_space, nas_run_args, epochs, training_args.seed, output_dir
    )
    test_split = tokenize_splits(splits, tokenizer, data_args, ("test",))["test"]
    tester = TrialTester(
        make_dataloader(test_split, tokenizer, training_args.per_device_eval_batch_size, False, 0),
        metric_task(data_args.task_name, task.is_regression), device,
    )
    evaluations = trial_evaluations(trials, search_space, cost_meter, backend)
    pareto, pareto_set = pareto_set_with_test(evaluations, trials, search_space, cost_meter, tester)
    unpruned = unpruned_reference(evaluations, trials, cost_meter, tester, epochs)
    keep_recorded_checkpoints(trials, backend, pareto_set)

    results = standard_nas_results(
        model_name, data_args, nas_args, training_args, cost_args, nas_run_args, epochs, device, unpruned,
        evaluations, pareto, pareto_set, wallclock_s, start_time,
    )
    write_results(results_path, results)
    logger.info(
        "%d trials (%d stopped early by %s) in %.0f s, %.3f %s-hours; results in %s", len(evaluations),
        sum(record["stopped_early"] for record in evaluations), nas_run_args.scheduler, wallclock_s,
        results["device_hours"], device.type.upper() if device.type == "cpu" else "GPU", results_path,
    )


if __name__ == "__main__":
    exit_on_usage_error(main)
