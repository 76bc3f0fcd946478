"""Super-network training strategies: which sub-networks one step trains, and with which loss.

One function (`train_sub_network`) trains one sub-network on one batch; a strategy only plans
the passes of a step. Gradients of all passes accumulate into one optimizer step.

- standard: the full network only (plain fine-tuning).
- random: k random sub-networks, cross-entropy.
- linear_random: with probability step/total_steps (rising linearly from 0 to 1 over training)
  k random sub-networks, otherwise the full network; cross-entropy.
- sandwich: the full network, the smallest and k random sub-networks, cross-entropy
  (Yu & Huang 2019, "Universally Slimmable Networks and Improved Training Techniques").
- one_shot: sandwich, but the smallest and the random sub-networks learn from the full
  network's detached logits of the same step (in-place distillation, Yu et al. 2020, "BigNAS").
- kd: the linear_random schedule with that distillation loss.
- none: no training at all; the checkpoint is the pre-trained model, searched as it is (Minitron-style
  pruning of a pre-trained LLM whose super-network training would cost too much).

Distillation loss: T^2 * CE(student / T, softmax(teacher / T)) + CE(student, labels); for
regression, MSE to the teacher + MSE to the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from errors import UsageError
from search_spaces import SearchSpace
from sub_network import SubNetwork

SubNetworkRunner = Callable[[nn.Module, SubNetwork], AbstractContextManager]


@dataclass(frozen=True)
class PlannedPass:
    role: str  # "largest", "smallest" or "random": the name its loss is logged under
    sub_network: SubNetwork | None  # None: the full network, run without any hook
    distill: bool  # learn from the full network's logits of the same step


def classifier_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**{key: value for key, value in batch.items() if key != "labels"}).logits


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, or MSE for a single-output (regression) head."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits, teacher_logits) + task_loss(student_logits, labels)
    soft_targets = F.softmax(teacher_logits / temperature, dim=-1)
    soft_loss = F.cross_entropy(student_logits / temperature, soft_targets)
    return temperature**2 * soft_loss + task_loss(student_logits, labels)


@dataclass(frozen=True)
class TrainingObjective:
    """What one pass computes: the model's logits for a batch, and their loss against the labels or a teacher.

    Classification here; token-level language modelling in `language_modeling.LANGUAGE_MODELING`.
    """

    logits: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    distillation_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


CLASSIFICATION = TrainingObjective(classifier_logits, task_loss, distillation_loss)


class SamplingStrategy:
    """Plans the passes of one training step."""

    def __init__(self, search_space: SearchSpace, num_random_sub_nets: int):
        self.search_space = search_space
        self.num_random_sub_nets = num_random_sub_nets

    def plan(self, step: int, total_steps: int, rng: np.random.Generator) -> list[PlannedPass]:
        raise NotImplementedError

    def _random(self, rng: np.random.Generator, distill: bool) -> list[PlannedPass]:
        return [
            PlannedPass("random", self.search_space.sample(rng), distill) for _ in range(self.num_random_sub_nets)
        ]


class Standard(SamplingStrategy):
    def plan(self, step, total_steps, rng):
        return [PlannedPass("largest", None, distill=False)]


class Random(SamplingStrategy):
    def plan(self, step, total_steps, rng):
        return self._random(rng, distill=False)


class LinearRandom(SamplingStrategy):
    distill = False

    def plan(self, step, total_steps, rng):
        if rng.random() < step / max(total_steps, 1):
            return self._random(rng, distill=self.distill)
        return [PlannedPass("largest", None, distill=False)]


class KnowledgeDistillation(LinearRandom):
    distill = True


class Sandwich(SamplingStrategy):
    distill = False

    def plan(self, step, total_steps, rng):
        return [
            PlannedPass("largest", None, distill=False),
            PlannedPass("smallest", self.search_space.smallest(), distill=self.distill),
            *self._random(rng, distill=self.distill),
        ]


class OneShot(Sandwich):
    distill = True


class NoTraining(SamplingStrategy):
    def plan(self, step, total_steps, rng):
        return []


SAMPLING_STRATEGIES: dict[str, type[SamplingStrategy]] = {
    "standard": Standard,
    "random": Random,
    "linear_random": LinearRandom,
    "sandwich": Sandwich,
    "one_shot": OneShot,
    "kd": KnowledgeDistillation,
    "none": NoTraining,
}


def make_sampling_strategy(name: str, search_space: SearchSpace, num_random_sub_nets: int) -> SamplingStrategy:
    if name not in SAMPLING_STRATEGIES:
        raise UsageError(f"unknown sampling strategy '{name}'; choose one of: {', '.join(SAMPLING_STRATEGIES)}")
    if num_random_sub_nets < 1:
        raise UsageError(f"--num_random_sub_nets must be at least 1, got {num_random_sub_nets}")
    return SAMPLING_STRATEGIES[name](search_space, num_random_sub_nets)


def train_sub_network(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    planned: PlannedPass,
    run_as: SubNetworkRunner,
    teacher_logits: torch.Tensor | None,
    temperature: float,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    objective: TrainingObjective = CLASSIFICATION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one sub-network on one batch; returns (loss, logits)."""
    context = nullcontext() if planned.sub_network is None else run_as(model, planned.sub_network)
    with context:
        with autocast():
            logits = objective.logits(model, batch).float()
            if planned.distill:
                loss = objective.distillation_loss(logits, teacher_logits, batch["labels"], temperature)
            else:
                loss = objective.loss(logits, batch["labels"])
        backward(loss)
    return loss.detach(), logits.detach()


def training_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    passes: list[PlannedPass],
    run_as: SubNetworkRunner,
    temperature: float,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    objective: TrainingObjective = CLASSIFICATION,
) -> dict[str, float]:
    """Run the planned passes, accumulating gradients; returns the mean loss per role."""
    teacher_logits = None
    if any(planned.distill for planned in passes) and passes[0].sub_network is not None:
        with torch.no_grad(), autocast():
            teacher_logits = objective.logits(model, batch).float()
    losses: dict[str, list[float]] = {}
    for planned in passes:
        loss, logits = train_sub_network(
            model, batch, planned, run_as, teacher_logits, temperature, backward, autocast, objective
        )
        if planned.sub_network is None and teacher_logits is None:
            teacher_logits = logits
        losses.setdefault(planned.role, []).append(loss.item())
    return {role: float(np.mean(values)) for role, values in losses.items()}
