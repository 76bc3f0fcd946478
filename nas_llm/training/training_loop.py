"""The optimizer and the epoch loop shared by super-network training and standard-NAS trials.

One epoch: every batch runs the passes a plan asks for (the full network, sub-networks), their
gradients accumulate into one optimizer step, then the learning-rate schedule advances. Super-network
training plans passes with a sampling strategy; a standard-NAS trial trains one (extracted) model,
i.e. a single full pass per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

if TYPE_CHECKING:
    from nas_llm.training.teacher import Teacher

from nas_llm.common.memory import release_freed_memory
from nas_llm.model.label_scale import LabelScale
from nas_llm.training.objective import CLASSIFICATION, SubNetworkRunner, TrainingObjective
from nas_llm.training.sampling import PlannedPass, training_step

FULL_NETWORK_ONLY = [PlannedPass("largest", None, distill=False)]


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and normalisation weights (the HF convention)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.dim() < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


def make_lr_schedule(optimizer: torch.optim.Optimizer, training_args, total_steps: int):
    """--lr_scheduler_type over `total_steps`, warming up for --warmup_ratio of them (arguments.TrainingArguments)."""
    return get_scheduler(
        training_args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(training_args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )


def train_epoch(
    model: nn.Module,
    train_loader: DataLoader,
    runtime,
    optimizer: torch.optim.Optimizer,
    scheduler,
    plan: Callable[[int], list[PlannedPass]],
    run_as: SubNetworkRunner,
    temperature: float,
    max_grad_norm: float,
    global_step: int,
    description: str,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    objective: TrainingObjective = CLASSIFICATION,
    label_scale: LabelScale | None = None,
    teacher: Teacher | None = None,
    distill_hidden_states: bool = False,
) -> int:
    """One pass over `train_loader`; `plan(step)` names the passes of each step. Returns the new global step.

    `runtime` is a `distributed` runtime (one process or accelerate); `on_step(step, losses)` sees the mean
    loss per role after every optimizer step; `objective` says what a pass computes (classification or
    language modelling); `label_scale`, `teacher` and `distill_hidden_states` go to `training_step`.
    """
    progress = tqdm(train_loader, desc=description, disable=not runtime.is_main_process)
    for batch in progress:
        batch = {key: value.to(runtime.device) for key, value in batch.items()}
        passes = plan(global_step)
        with runtime.accumulate_passes(model, len(passes)) as backward:
            losses = training_step(
                model, batch, passes, run_as, temperature, backward=backward, autocast=runtime.autocast,
                objective=objective, label_scale=label_scale, teacher=teacher,
                distill_hidden_states=distill_hidden_states,
            )
        if max_grad_norm > 0:
            runtime.clip_grad_norm_(model, optimizer, max_grad_norm)
        runtime.optimizer_step(optimizer)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        release_freed_memory()
        global_step += 1
        progress.set_postfix({role: f"{loss:.3f}" for role, loss in losses.items()})
        if on_step is not None:
            on_step(global_step, losses)
    return global_step
