"""The steps of train_supernet.py, each in its own function so that the script reads as the run happens.

What a checkpoint records to be resumed (`supernet_settings`), loading the model to train and its teacher, the
sampling strategy, the importance reordering before the first step, and `SupernetTraining`: the prepared run
whose methods are what the script does per epoch and at the end (train, validate, save, the results record).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from nas_llm.common.arguments import ModelArguments, NASArguments, SupernetArguments, TrainingArguments
from nas_llm.common.errors import UsageError
from nas_llm.common.io_utils import tensorboard_writer, write_json_atomic
from nas_llm.data.data import LM_TASK, evaluation_loaders, make_dataloader, task_info_for
from nas_llm.data.lm_data import LMArguments
from nas_llm.model.cost import ParameterCount, count_parameters
from nas_llm.model.label_scale import label_scale_for_training, standardised
from nas_llm.model.models import load_causal_lm, load_model, load_nas_settings, save_supernet
from nas_llm.model.search_spaces import SearchSpace
from nas_llm.training.distributed import AcceleratedProcesses, SingleProcess, gathered_parameters
from nas_llm.training.evaluation import evaluate
from nas_llm.training.importance import UnitImportance
from nas_llm.training.language_modeling import LANGUAGE_MODELING
from nas_llm.training.objective import CLASSIFICATION, SubNetworkRunner, TrainingObjective
from nas_llm.training.reorder import reorder_by_importance, report_importance
from nas_llm.training.sampling import SamplingStrategy, make_sampling_strategy
from nas_llm.training.sub_network_sampler import make_sub_network_sampler
from nas_llm.training.teacher import Teacher, load_teacher
from nas_llm.training.train_state import TrainingState, resolve_resume_checkpoint, restore_state, save_checkpoint
from nas_llm.training.training_loop import make_lr_schedule, make_optimizer, train_epoch

if TYPE_CHECKING:  # for annotations only: importing these takes seconds that `--help` need not wait
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from nas_llm.model.label_scale import LabelScale
    from nas_llm.model.sub_network import SubNetwork

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


def checkpoint_to_resume(training_args: TrainingArguments, nas_settings: dict) -> Path | None:
    """The --resume_from_checkpoint (None for a fresh start), checked to have been trained with `nas_settings`."""
    resume_from = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if resume_from is not None:
        check_same_settings(load_nas_settings(resume_from), nas_settings, resume_from)
    return resume_from


def supernet_settings(
    model_name: str, task_name: str | None, nas_args: NASArguments, supernet_args: SupernetArguments,
    training_args: TrainingArguments,
) -> dict:
    """What the checkpoint records about its training: the search reads it, a resumed run must repeat it. The
    `importance` space ranks units by the importance that --reorder_units importance scores: refused without it."""
    if nas_args.search_space == "importance" and supernet_args.reorder_units != "importance":
        raise UsageError("--search_space importance keeps units by their importance: add --reorder_units importance")
    settings = {
        "model_name_or_path": model_name,
        "task_name": task_name,
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
        settings["num_importance_batches"] = supernet_args.num_importance_batches
    return settings


def objective_for(task_name: str | None) -> TrainingObjective:
    """Next-token loss for language modelling, the task head's loss otherwise."""
    return LANGUAGE_MODELING if task_name == LM_TASK else CLASSIFICATION


def load_student_and_teacher(
    model_args: ModelArguments, lm_args: LMArguments, supernet_args: SupernetArguments, task_name: str | None,
    model_name: str, resume_from: Path | None, examples: datasets.DatasetDict | None,
    tokenizer: PreTrainedTokenizerBase, device,
) -> tuple[PreTrainedModel, Teacher | None, LabelScale | None]:
    """The super-network to train on `device`, its teacher if any, and the label scale both are trained on.

    The weights come from the checkpoint resumed, else the teacher with --init_from_teacher, else the pre-trained
    model; `examples` is None for language modelling (no head, no labels to standardise).
    """
    task = None if examples is None else task_info_for(examples)
    teacher_model = None
    if supernet_args.teacher_model_name_or_path is not None:
        teacher_model = load_teacher(
            supernet_args.teacher_model_name_or_path, model_name, task_name, task, tokenizer.pad_token_id,
            model_args.cache_dir,
        )
    from_teacher = supernet_args.init_from_teacher and resume_from is None
    weights_source = str(resume_from) if resume_from is not None else model_name
    if from_teacher:
        weights_source = supernet_args.teacher_model_name_or_path
    if task is None:
        model = load_causal_lm(weights_source, model_args.cache_dir, lm_args.torch_dtype)
    else:
        model = load_model(
            weights_source, task.label_names, tokenizer, model_args.cache_dir, multiple_choice=task.multiple_choice
        )
    model = model.to(device)
    label_scale = None if task is None else label_scale_for_training(
        model.config, task.is_regression, supernet_args.standardize_labels, examples["train"]["label"],
        inherited=resume_from is not None or from_teacher,
    )
    teacher = None if teacher_model is None else Teacher(teacher_model.to(device), label_scale)
    return model, teacher, label_scale


def make_strategy(supernet_args: SupernetArguments, search_space: SearchSpace, model: nn.Module) -> SamplingStrategy:
    """The --sampling_strategy, drawing its random sub-networks from the --sampling_distribution."""
    sampler = make_sub_network_sampler(supernet_args.sampling_distribution, search_space, model)
    return make_sampling_strategy(
        supernet_args.sampling_strategy, search_space, supernet_args.num_random_sub_nets,
        supernet_args.distill_full_network, sampler,
    )


def parameters_of_largest_and_smallest(model: nn.Module, search_space: SearchSpace) -> dict[str, ParameterCount]:
    """Counted before the model is prepared: DeepSpeed ZeRO-3 then keeps only a shard of each parameter."""
    return {
        role: count_parameters(model, sub_network)
        for role, sub_network in (("largest", search_space.largest()), ("smallest", search_space.smallest()))
    }


def make_loaders(
    tokenized: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, training_args: TrainingArguments
) -> tuple[DataLoader, dict[str, DataLoader]]:
    """The shuffled, seeded training loader and the validation and test loaders."""
    train_loader = make_dataloader(
        tokenized["train"], tokenizer, training_args.per_device_train_batch_size, True, training_args.seed,
        training_args.group_by_length,
    )
    return train_loader, evaluation_loaders(tokenized, tokenizer, training_args.per_device_eval_batch_size)


def reorder_if_asked(
    model: nn.Module, train_split: datasets.Dataset, tokenizer: PreTrainedTokenizerBase,
    supernet_args: SupernetArguments, training_args: TrainingArguments, resumed: bool,
    label_scale: LabelScale | None, objective: TrainingObjective,
) -> UnitImportance | None:
    """--reorder_units importance: score the units on training batches and permute the weights; the scores.

    None when not asked, or when resuming: a checkpoint is already reordered. Its own seeded loader: the training
    data order stays that of a run without reordering.
    """
    if supernet_args.reorder_units != "importance" or resumed:
        return None
    importance_loader = make_dataloader(
        train_split, tokenizer, training_args.per_device_train_batch_size, True, training_args.seed
    )
    batches = islice(importance_loader, supernet_args.num_importance_batches)
    return reorder_by_importance(model, (standardised(b, label_scale) for b in batches), objective)


def log_scalars(writer: SummaryWriter | None, scalars: dict[str, float], step: int) -> None:
    """TensorBoard scalars; `writer` is None in the processes that do not log (all but the main one)."""
    if writer is not None:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)


def save_from_main_process(
    runtime: SingleProcess | AcceleratedProcesses, unwrapped: nn.Module, save: Callable[[nn.Module], None]
) -> None:
    """Write a checkpoint once all processes finished their steps: from the main one, with whole weights."""
    runtime.wait_for_everyone()
    with gathered_parameters(unwrapped):
        if runtime.is_main_process:
            save(unwrapped)


@dataclass
class SupernetTraining:
    """A prepared super-network training run; its methods are the steps train_supernet.py takes.

    `global_step` and `start_time` move on as it trains (and when it resumes), so the checkpoints and the
    results record what the run has done so far.
    """

    runtime: SingleProcess | AcceleratedProcesses
    model: nn.Module  # as the runtime prepared it (wrapped for DDP or DeepSpeed)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: DataLoader
    eval_loaders: dict[str, DataLoader]
    state: TrainingState
    strategy: SamplingStrategy
    search_space: SearchSpace
    objective: TrainingObjective
    label_scale: LabelScale | None
    teacher: Teacher | None
    run_as: SubNetworkRunner
    metrics_key: str
    supernet_args: SupernetArguments
    training_args: TrainingArguments
    tokenizer: PreTrainedTokenizerBase
    nas_settings: dict
    writer: SummaryWriter | None
    start_time: float
    num_epochs: int
    total_steps: int
    start_epoch: int = 0
    global_step: int = 0

    @property
    def unwrapped(self) -> nn.Module:
        return self.runtime.unwrap(self.model)

    def resume(self, checkpoint: Path | None) -> None:
        """Carry on from `checkpoint`: its epochs, steps, optimizer, data order and training time so far."""
        if checkpoint is None:  # a fresh start
            return
        self.start_epoch, self.global_step, earlier_runtime_s = restore_state(checkpoint, self.state)
        self.start_time -= earlier_runtime_s  # runtime_s counts the earlier sessions' training too
        logger.info("Resuming from %s: %d epochs (%d steps) done", checkpoint, self.start_epoch, self.global_step)

    def report_start(self, importance: UnitImportance | None, model_name: str, num_train_examples: int) -> None:
        """The importance scores of a reordered run (main process only), and what is about to be trained."""
        if importance is not None and self.runtime.is_main_process:
            report_importance(importance, self.training_args.output_dir, self.writer)
        logger.info(
            "Training %s (%s) with %s on %d examples for %d steps in %d process(es)",
            model_name, self.nas_settings["search_space"], self.supernet_args.sampling_strategy, num_train_examples,
            self.total_steps, self.runtime.num_processes,
        )

    def score(self, split: str, sub_network: SubNetwork | None = None) -> dict[str, float]:
        """Every process scores the whole split (ZeRO-3 needs all of them in each forward)."""
        return evaluate(
            self.unwrapped, self.eval_loaders[split], self.metrics_key, self.runtime.device, sub_network, self.run_as
        )

    def log_losses(self, step: int, losses: dict[str, float]) -> None:
        if step % self.training_args.logging_steps == 0:
            scalars = {f"train/loss_{role}": loss for role, loss in losses.items()}
            log_scalars(self.writer, scalars | {"train/learning_rate": self.scheduler.get_last_lr()[0]}, step)

    def train_epoch(self, epoch: int) -> None:
        """One pass over the training data, each step training the sub-networks the strategy plans."""
        self.global_step = train_epoch(
            self.model, self.train_loader, self.runtime, self.optimizer, self.scheduler,
            plan=lambda step: self.strategy.plan(step, self.total_steps, self.state.sampling_rng),
            run_as=self.runtime.sub_network_runner(self.run_as),
            temperature=self.supernet_args.temperature, max_grad_norm=self.training_args.max_grad_norm,
            global_step=self.global_step, description=f"epoch {epoch + 1}/{self.training_args.num_train_epochs}",
            on_step=self.log_losses, objective=self.objective, label_scale=self.label_scale, teacher=self.teacher,
            distill_hidden_states=self.supernet_args.distill_hidden_states,
        )

    def log_validation(self, epoch: int) -> None:
        """The validation metrics of the largest and the smallest sub-network after `epoch` (0-based)."""
        for role, sub_network in (("largest", None), ("smallest", self.search_space.smallest())):
            scores = self.score("validation", sub_network)
            log_scalars(self.writer, {f"validation/{role}/{name}": value for name, value in scores.items()}, epoch + 1)

    def save_epoch(self, trained: nn.Module, epoch: int) -> None:
        """checkpoint-<epoch>/; under DeepSpeed the weights only (its optimizer state is partitioned)."""
        directory = Path(self.training_args.output_dir) / f"checkpoint-{epoch}"
        if self.runtime.saves_training_state:
            save_checkpoint(
                directory, trained, self.tokenizer, self.nas_settings, self.state, epoch, self.global_step,
                time.time() - self.start_time,
            )
        else:
            save_supernet(trained, self.tokenizer, directory, self.nas_settings)

    def end_epoch(self, epoch: int) -> None:
        """After training `epoch` (0-based): validate, write checkpoint-<epoch + 1>/ if asked, flush the logs."""
        self.log_validation(epoch)
        if self.training_args.save_strategy == "epoch":
            save_from_main_process(self.runtime, self.unwrapped, partial(self.save_epoch, epoch=epoch + 1))
        if self.writer is not None:
            self.writer.flush()

    def save_final(self) -> None:
        """The super-network in --output_dir, the checkpoint the search loads."""
        save_from_main_process(
            self.runtime, self.unwrapped,
            lambda trained: save_supernet(trained, self.tokenizer, self.training_args.output_dir, self.nas_settings),
        )

    def results(self, num_parameters: dict[str, ParameterCount], num_train_examples: int) -> dict:
        """results.json: the full and the smallest sub-network's sizes and scores, and what the training cost."""
        smallest = self.search_space.smallest()
        return {
            "settings": self.nas_settings,
            "num_parameters": num_parameters["largest"].total,
            "num_layer_parameters": num_parameters["largest"].layers,
            "validation": self.score("validation"),
            "test": self.score("test"),
            "smallest_sub_network": {
                "num_parameters": num_parameters["smallest"].total,
                "validation": self.score("validation", smallest),
                "test": self.score("test", smallest),
            },
            "num_train_examples": num_train_examples,
            "num_processes": self.runtime.num_processes,
            "num_steps": self.global_step,
            "runtime_s": time.time() - self.start_time,
        }

    def write_results(self, results: dict) -> None:
        """results.json beside the checkpoint, from the main process, which then closes its TensorBoard log."""
        if self.runtime.is_main_process:
            write_json_atomic(Path(self.training_args.output_dir) / "results.json", results)
            self.writer.close()


def prepare_training(
    runtime: SingleProcess | AcceleratedProcesses, model: nn.Module, train_loader: DataLoader,
    training_args: TrainingArguments, supernet_args: SupernetArguments, log_dir: Path, **parts,
) -> SupernetTraining:
    """Optimizer, learning-rate schedule and training state, prepared by the runtime (DDP, DeepSpeed or none),
    and the TensorBoard log in `log_dir` (main process only).

    `parts` are the remaining fields of `SupernetTraining`, passed through.
    """
    optimizer = make_optimizer(model, training_args.learning_rate, training_args.weight_decay)
    model, optimizer, train_loader = runtime.prepare(model, optimizer, train_loader)
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
    return SupernetTraining(
        runtime=runtime, model=model, optimizer=optimizer, scheduler=scheduler, train_loader=train_loader,
        state=state, supernet_args=supernet_args, training_args=training_args, num_epochs=num_epochs,
        total_steps=total_steps, writer=tensorboard_writer(log_dir) if runtime.is_main_process else None, **parts,
    )
