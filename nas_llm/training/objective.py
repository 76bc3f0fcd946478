"""What one training pass computes, shared by every stage that runs a sub-network on a batch.

The objective (logits, task loss, distillation loss) and the distillation targets live here, apart from
the sampling strategies, so that the strategies, the teacher, importance, least squares and evaluation
import them without importing one another.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas_llm.model.sub_network import SubNetwork

SubNetworkRunner = Callable[[nn.Module, SubNetwork], AbstractContextManager]


@dataclass(frozen=True)
class DistillationTargets:
    """What a distilled pass learns from, detached: logits in the student's label scale, hidden states."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, then every layer's output (HF's order)


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
