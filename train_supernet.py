"""Stage 1: fine-tune a pre-trained model as a super-network whose sub-networks share its weights.

Every step trains the sub-networks a sampling strategy plans (e.g. one_shot: the full network,
the smallest and k random sub-networks, the latter distilled from the former), accumulating their
gradients into one optimizer step. Writes a save_pretrained checkpoint that run_offline_search.py
loads, TensorBoard scalars and a results JSON.

    python train_supernet.py --model_name_or_path bert-base-cased --task_name rte \
        --sampling_strategy one_shot --search_space small --output_dir ./supernet_model_checkpoint

With --task_name lm a decoder trains as a causal LM on text packed into blocks (lm_data.py), with the
next-token loss and token-level distillation (language_modeling.py); --sampling_strategy none trains nothing
and writes the pre-trained model as the checkpoint to search.

With --use_accelerate True the same loop runs data-parallel in the processes `accelerate launch`
starts (DDP or DeepSpeed; see distributed.py): each trains on its shard of every epoch, only the
main process logs and writes checkpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn
from transformers import set_seed

from nas_llm.common.arguments import ModelArguments, NASArguments, SupernetArguments, TrainingArguments, parse_arguments
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.common.io_utils import tensorboard_writer, write_json_atomic
from nas_llm.common.memory import bound_kernel_cache
from nas_llm.data.data import LM_TASK, DataArguments, load_raw_splits, make_dataloader, task_info_for, tokenize_splits
from nas_llm.data.lm_data import LMArguments, load_blocks
from nas_llm.data.metrics import metric_task
from nas_llm.model.cost import count_parameters
from nas_llm.model.label_scale import label_scale_for_training, standardised
from nas_llm.model.models import (
    load_causal_lm,
    load_model,
    load_nas_settings,
    load_tokenizer,
    resolve_model_name,
    save_supernet,
)
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import runner_for
from nas_llm.training.distributed import gathered_parameters, make_runtime, report_from_main_process_only
from nas_llm.training.evaluation import evaluate
from nas_llm.training.language_modeling import LANGUAGE_MODELING
from nas_llm.training.objective import CLASSIFICATION
from nas_llm.training.reorder import reorder_by_importance, report_importance
from nas_llm.training.sampling import make_sampling_strategy
from nas_llm.training.sub_network_sampler import make_sub_network_sampler
from nas_llm.training.teacher import Teacher, load_teacher
from nas_llm.training.train_state import TrainingState, resolve_resume_checkpoint, restore_state, save_checkpoint
from nas_llm.training.training_loop import make_lr_schedule, make_optimizer, train_epoch

if TYPE_CHECKING:  # for annotations only: importing these takes seconds that `--help` need not wait
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


SETTINGS_ADDED_LATER = {"group_by_length": False}  # what checkpoints written before these settings existed used


def check_same_settings(trained: dict, requested: dict, checkpoint: Path) -> None:
    """A run resumes only with the settings it was started with."""
    for name, value in requested.items():
        recorded = trained.get(name, SETTINGS_ADDED_LATER.get(name))
        if recorded != value:
            raise UsageError(
                f"{checkpoint} was trained with --{name} {recorded} but this run asks for --{name} {value}; "
                "resume with the same settings or start a new --output_dir"
            )


def log_scalars(writer: SummaryWriter | None, scalars: dict[str, float], step: int) -> None:
    """TensorBoard scalars; `writer` is None in the processes that do not log (all but the main one)."""
    if writer is not None:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)


def save_from_main_process(runtime, unwrapped: nn.Module, save: Callable[[nn.Module], None]) -> None:
    """Write a checkpoint once all processes finished their steps: from the main one, with whole weights."""
    runtime.wait_for_everyone()
    with gathered_parameters(unwrapped):
        if runtime.is_main_process:
            save(unwrapped)


def main(argv: list[str] | None = None) -> PreTrainedModel:
    """Train and save the super-network; returns it (unwrapped), for callers in Python such as tests."""
    model_args, data_args, lm_args, nas_args, supernet_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, LMArguments, NASArguments, SupernetArguments, TrainingArguments), argv
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    start_time = time.time()
    bound_kernel_cache()
    runtime = make_runtime(
        training_args.use_accelerate, training_args.fp16, training_args.bf16, nas_args.sub_network_execution,
        resume=training_args.resume_from_checkpoint is not None,
    )
    report_from_main_process_only(runtime.is_main_process)
    set_seed(training_args.seed)

    language_modeling = data_args.task_name == LM_TASK
    objective = LANGUAGE_MODELING if language_modeling else CLASSIFICATION
    if not language_modeling:  # text is loaded once the model is, to check the blocks against its positions
        with runtime.main_process_first():
            splits = load_raw_splits(data_args)
    model_name = resolve_model_name(model_args.model_name_or_path)
    nas_settings = {
        "model_name_or_path": model_name,
        "task_name": data_args.task_name,
        "search_space": nas_args.search_space,
        "sampling_strategy": supernet_args.sampling_strategy,
        "num_random_sub_nets": supernet_args.num_random_sub_nets,
        "temperature": supernet_args.temperature,
        "sampling_distribution": supernet_args.sampling_distribution,
        "seed": training_args.seed,
        "reorder_units": supernet_args.reorder_units,
        "standardize_labels": supernet_args.standardize_labels,
        "teacher_model_name_or_path": supernet_args.teacher_model_name_or_path,
        "init_from_teacher": supernet_args.init_from_teacher,
        "distill_hidden_states": supernet_args.distill_hidden_states,
        "distill_full_network": supernet_args.distill_full_network,
        "group_by_length": training_args.group_by_length,
    }
    if supernet_args.reorder_units == "importance":
        nas_settings["num_importance_batches"] = supernet_args.num_importance_batches
    resume_from = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if resume_from is not None:
        check_same_settings(load_nas_settings(resume_from), nas_settings, resume_from)
    tokenizer = load_tokenizer(str(resume_from or model_name), model_args.cache_dir)
    task = None if language_modeling else task_info_for(splits)
    teacher_model = None
    if supernet_args.teacher_model_name_or_path is not None:
        teacher_model = load_teacher(
            supernet_args.teacher_model_name_or_path, model_name, data_args.task_name, task,
            tokenizer.pad_token_id, model_args.cache_dir,
        )
    from_teacher = supernet_args.init_from_teacher and resume_from is None
    weights_source = str(resume_from) if resume_from is not None else model_name
    if from_teacher:
        weights_source = supernet_args.teacher_model_name_or_path
    if language_modeling:
        model = load_causal_lm(weights_source, model_args.cache_dir, lm_args.torch_dtype)
    else:
        model = load_model(
            weights_source, task.label_names, tokenizer, model_args.cache_dir, multiple_choice=task.multiple_choice
        )
    model = model.to(runtime.device)
    label_scale = None if language_modeling else label_scale_for_training(
        model.config, task.is_regression, supernet_args.standardize_labels, splits["train"]["label"],
        inherited=resume_from is not None or from_teacher,
    )
    teacher = None if teacher_model is None else Teacher(teacher_model.to(runtime.device), label_scale)
    search_space = make_search_space(nas_args.search_space, model.config)
    sampler = make_sub_network_sampler(supernet_args.sampling_distribution, search_space, model)
    strategy = make_sampling_strategy(
        supernet_args.sampling_strategy, search_space, supernet_args.num_random_sub_nets,
        supernet_args.distill_full_network, sampler,
    )
    run_as = runner_for(nas_args.sub_network_execution)
    # Counted before the model is prepared: DeepSpeed ZeRO-3 then keeps only a shard of each parameter.
    num_parameters = {
        role: count_parameters(model, sub_network).total
        for role, sub_network in (("largest", search_space.largest()), ("smallest", search_space.smallest()))
    }

    with runtime.main_process_first():
        if language_modeling:
            tokenized = load_blocks(data_args, lm_args, tokenizer, model.config)
        else:
            tokenized = tokenize_splits(splits, tokenizer, data_args)
    train_loader = make_dataloader(
        tokenized["train"], tokenizer, training_args.per_device_train_batch_size, True, training_args.seed,
        training_args.group_by_length,
    )
    eval_loaders = {
        name: make_dataloader(tokenized[name], tokenizer, training_args.per_device_eval_batch_size, False, 0)
        for name in ("validation", "test")
    }

    importance = None
    if supernet_args.reorder_units == "importance" and resume_from is None:  # a checkpoint is already reordered
        # Its own seeded loader: the training data order stays that of a run without reordering.
        importance_loader = make_dataloader(
            tokenized["train"], tokenizer, training_args.per_device_train_batch_size, True, training_args.seed
        )
        batches = islice(importance_loader, supernet_args.num_importance_batches)
        importance = reorder_by_importance(model, (standardised(b, label_scale) for b in batches), objective)

    optimizer = make_optimizer(model, training_args.learning_rate, training_args.weight_decay)
    model, optimizer, train_loader = runtime.prepare(model, optimizer, train_loader)
    unwrapped = runtime.unwrap(model)
    # --sampling_strategy none: no step at all, the checkpoint is the pre-trained model as it is.
    num_epochs = 0 if supernet_args.sampling_strategy == "none" else training_args.num_train_epochs
    total_steps = num_epochs * len(train_loader)
    scheduler = runtime.prepare_scheduler(make_lr_schedule(optimizer, training_args, total_steps))
    state = TrainingState(
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=runtime.scaler,
        data_order=train_loader.generator,
        sampling_rng=np.random.default_rng(training_args.seed),
    )
    start_epoch, global_step = 0, 0
    if resume_from is not None:
        start_epoch, global_step, earlier_runtime_s = restore_state(resume_from, state)
        start_time -= earlier_runtime_s  # runtime_s counts the earlier sessions' training too
        logger.info("Resuming from %s: %d epochs (%d steps) done", resume_from, start_epoch, global_step)
    sampling_rng = state.sampling_rng
    log_dir = nas_args.run_log_dir("train", training_args.output_dir)
    writer = tensorboard_writer(log_dir) if runtime.is_main_process else None
    if importance is not None and runtime.is_main_process:
        report_importance(importance, training_args.output_dir, writer)
    logger.info(
        "Training %s (%s) with %s on %d examples for %d steps in %d process(es)",
        model_name, nas_args.search_space, supernet_args.sampling_strategy, len(tokenized["train"]), total_steps,
        runtime.num_processes,
    )

    metrics_key = metric_task(data_args.task_name, not language_modeling and task.is_regression)
    train_as = runtime.sub_network_runner(run_as)

    def score(split: str, sub_network=None) -> dict[str, float]:
        """Every process scores the whole split (ZeRO-3 needs all of them in each forward)."""
        return evaluate(unwrapped, eval_loaders[split], metrics_key, runtime.device, sub_network, run_as)

    def save_epoch(trained: nn.Module, epoch: int) -> None:
        """checkpoint-<epoch>/; under DeepSpeed the weights only (its optimizer state is partitioned)."""
        directory = Path(training_args.output_dir) / f"checkpoint-{epoch}"
        if runtime.saves_training_state:
            save_checkpoint(
                directory, trained, tokenizer, nas_settings, state, epoch, global_step, time.time() - start_time
            )
        else:
            save_supernet(trained, tokenizer, directory, nas_settings)

    def log_losses(step: int, losses: dict[str, float]) -> None:
        if step % training_args.logging_steps == 0:
            scalars = {f"train/loss_{role}": loss for role, loss in losses.items()}
            log_scalars(writer, scalars | {"train/learning_rate": scheduler.get_last_lr()[0]}, step)

    model.train()
    for epoch in range(start_epoch, num_epochs):
        global_step = train_epoch(
            model, train_loader, runtime, optimizer, scheduler,
            plan=lambda step: strategy.plan(step, total_steps, sampling_rng), run_as=train_as,
            temperature=supernet_args.temperature, max_grad_norm=training_args.max_grad_norm,
            global_step=global_step, description=f"epoch {epoch + 1}/{training_args.num_train_epochs}",
            on_step=log_losses, objective=objective, label_scale=label_scale, teacher=teacher,
            distill_hidden_states=supernet_args.distill_hidden_states,
        )

        for role, sub_network in (("largest", None), ("smallest", search_space.smallest())):
            scores = score("validation", sub_network)
            log_scalars(writer, {f"validation/{role}/{name}": value for name, value in scores.items()}, epoch + 1)
        if training_args.save_strategy == "epoch":
            save_from_main_process(runtime, unwrapped, partial(save_epoch, epoch=epoch + 1))
        if writer is not None:
            writer.flush()

    save_from_main_process(
        runtime, unwrapped, lambda trained: save_supernet(trained, tokenizer, training_args.output_dir, nas_settings)
    )
    results = {
        "settings": nas_settings,
        "num_parameters": num_parameters["largest"],
        "validation": score("validation"),
        "test": score("test"),
        "smallest_sub_network": {
            "num_parameters": num_parameters["smallest"],
            "validation": score("validation", search_space.smallest()),
            "test": score("test", search_space.smallest()),
        },
        "num_train_examples": len(tokenized["train"]),
        "num_processes": runtime.num_processes,
        "num_steps": global_step,
        "runtime_s": time.time() - start_time,
    }
    if runtime.is_main_process:
        write_json_atomic(Path(training_args.output_dir) / "results.json", results)
        writer.close()
    logger.info("Full network: validation %s, test %s", results["validation"], results["test"])
    runtime.end()
    return unwrapped


if __name__ == "__main__":
    exit_on_usage_error(main)
