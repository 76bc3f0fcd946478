"""One standard-NAS trial, started by Syne Tune: fine-tune one sub-network of the pre-trained model on its own.

The sub-network is extracted from the pre-trained weights (a genuinely smaller model, see extract.py), so
the trial costs what the sub-network costs. After every epoch it scores the validation split, saves the
model to `<st_checkpoint_dir>/epoch-<k>/` (before reporting, so the weights of every report exist) and
reports `epoch`, `error` and `params` (relative to the unpruned network) with syne_tune.Reporter.
Regression trains on standardised labels, as super-network training does (label_scale.py).

Syne Tune passes `--st_config_json_filename` (the config: the sub-network's hyperparameters plus the path
of the run's settings file, which holds the command line of run_standard_nas.py) and `--st_checkpoint_dir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from syne_tune import Reporter
from syne_tune.constants import ST_CHECKPOINT_DIR, ST_CONFIG_JSON_FNAME_ARG
from transformers import set_seed

from nas_llm.baselines.standard_nas import ARGUMENTS, SETTINGS_KEY, check_training_flags, epoch_checkpoint, max_epochs
from nas_llm.common.arguments import parse_arguments
from nas_llm.common.errors import exit_on_usage_error
from nas_llm.data.data import load_raw_splits, make_dataloader, task_info_for, tokenize_splits
from nas_llm.data.metrics import metric_task
from nas_llm.extraction.extract import extract_sub_network, save_extracted
from nas_llm.model.cost import count_parameters
from nas_llm.model.label_scale import label_scale_for_training
from nas_llm.model.models import load_model, load_tokenizer, resolve_model_name
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import runner_for
from nas_llm.training.distributed import make_runtime
from nas_llm.training.evaluation import evaluate
from nas_llm.training.training_loop import FULL_NETWORK_ONLY, make_lr_schedule, make_optimizer, train_epoch

logger = logging.getLogger(__name__)


def save_epoch(model, tokenizer, sub_network, checkpoint_dir: Path, epoch: int) -> None:
    """epoch-<k>/, written under a temporary name and renamed (run_standard_nas.py drops the unneeded ones)."""
    final = epoch_checkpoint(checkpoint_dir, epoch)
    partial = final.with_name(final.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    save_extracted(model, tokenizer, sub_network, partial)
    partial.rename(final)


def main(argv: list[str] | None = None) -> None:
    start_time = time.time()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(f"--{ST_CONFIG_JSON_FNAME_ARG}", required=True)
    parser.add_argument(f"--{ST_CHECKPOINT_DIR}", required=True)
    syne_tune_args = parser.parse_args(argv)
    config = json.loads(Path(getattr(syne_tune_args, ST_CONFIG_JSON_FNAME_ARG)).read_text())
    settings = json.loads(Path(config[SETTINGS_KEY]).read_text())
    model_args, data_args, nas_args, training_args, _, nas_run_args = parse_arguments(ARGUMENTS, settings["argv"])
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    check_training_flags(training_args)
    epochs = max_epochs(nas_run_args, training_args)
    checkpoint_dir = Path(getattr(syne_tune_args, ST_CHECKPOINT_DIR))
    set_seed(training_args.seed)
    runtime = make_runtime(False, training_args.fp16, training_args.bf16, "slice", resume=False)

    splits = load_raw_splits(data_args)
    task = task_info_for(splits)
    model_name = resolve_model_name(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_name, model_args.cache_dir)
    pretrained = load_model(
        model_name, task.label_names, tokenizer, model_args.cache_dir, multiple_choice=task.multiple_choice
    )
    search_space = make_search_space(nas_args.search_space, pretrained.config)
    sub_network = search_space.to_sub_network(config)
    num_parameters = count_parameters(pretrained, sub_network).total
    relative_params = num_parameters / count_parameters(pretrained, search_space.largest()).total
    model = extract_sub_network(pretrained, sub_network).to(runtime.device).train()
    del pretrained
    label_scale = label_scale_for_training(model.config, task.is_regression, True, splits["train"]["label"], False)

    tokenized = tokenize_splits(splits, tokenizer, data_args, ("train", "validation"))
    train_loader = make_dataloader(
        tokenized["train"], tokenizer, training_args.per_device_train_batch_size, True, training_args.seed,
        training_args.group_by_length,
    )
    validation_loader = make_dataloader(
        tokenized["validation"], tokenizer, training_args.per_device_eval_batch_size, False, 0
    )
    metrics_key = metric_task(data_args.task_name, task.is_regression)
    optimizer = make_optimizer(model, training_args.learning_rate, training_args.weight_decay)
    scheduler = make_lr_schedule(optimizer, training_args, epochs * len(train_loader))
    report = Reporter()
    logger.info("Fine-tuning %s (%d parameters, %.3f of the unpruned network)", sub_network.summary(),
                num_parameters, relative_params)

    global_step = 0
    for epoch in range(1, epochs + 1):
        global_step = train_epoch(
            model, train_loader, runtime, optimizer, scheduler, plan=lambda step: FULL_NETWORK_ONLY,
            run_as=runner_for("slice"), temperature=1.0, max_grad_norm=training_args.max_grad_norm,
            global_step=global_step, description=f"epoch {epoch}/{epochs}", label_scale=label_scale,
        )
        validation = evaluate(model, validation_loader, metrics_key, runtime.device)
        save_epoch(model, tokenizer, sub_network, checkpoint_dir, epoch)
        report(
            epoch=epoch, error=validation["error"], params=relative_params, num_parameters=num_parameters,
            elapsed_s=time.time() - start_time, **{f"validation_{name}": value for name, value in validation.items()},
        )


if __name__ == "__main__":
    exit_on_usage_error(main)
