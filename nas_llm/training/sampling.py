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
- ats: alternate optimizer steps: even steps (0, 2, ...) k random sub-networks with that distillation
  loss, odd steps the full network alone (whittle's ATS strategy, after Mohtashami et al. 2022, "Masked
  Training of Neural Networks with Partial Gradients"). The step is the run's optimizer step, restored
  on resume, so the alternation continues where it stopped.
- none: no training at all; the checkpoint is the pre-trained model, searched as it is (Minitron-style
  pruning of a pre-trained LLM whose super-network training would cost too much).

Distillation loss: T^2 * CE(student / T, softmax(teacher / T)) + CE(student, labels); for
regression, MSE to the teacher + MSE to the labels, all on standardised labels (label_scale.py).
The teacher is the full network of the same step (in place), or a frozen fine-tuned model
(teacher.py), which may then teach the full network too. With hidden-state distillation the loss
adds the mean, over corresponding layers, of the MSE between the student's and the teacher's
hidden states (`hidden_state_loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nas_llm.common.errors import UsageError
from nas_llm.model.label_scale import LabelScale, standardised
from nas_llm.model.search_spaces import SearchSpace
from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.objective import (
    CLASSIFICATION,
    DistillationTargets,
    SubNetworkRunner,
    TrainingObjective,
)
from nas_llm.training.sub_network_sampler import SubNetworkSampler
from nas_llm.training.teacher import Teacher


@dataclass(frozen=True)
class PlannedPass:
    role: str  # "largest", "smallest" or "random": the name its loss is logged under
    sub_network: SubNetwork | None  # None: the full network, run without any hook
    distill: bool  # learn from the teacher: the full network's outputs of the same step, or a fine-tuned model


def corresponding_hidden_states(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], kept_layers: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(student, teacher) hidden-state pairs of a sub-network keeping `kept_layers` (original indices).

    HF returns (embeddings, output of each layer run, ..., final output), the final one after the
    decoders' last norm. The student's final output always matches the teacher's final output (both
    feed the head); the output of every other kept layer matches the teacher's output of the same
    layer, i.e. the residual stream at the same depth. A dropped layer has no output of its own and
    so no term. Sliced execution returns only the layers it runs, masked execution every layer (the
    dropped ones as the identity); both give the same pairs. A sub-network that keeps no layer has no
    pair (sliced, HF records no hidden state at all; masked would give the embeddings): its logits still learn.
    """
    if not kept_layers:
        return []
    run_outputs = student[1:-1]
    if len(run_outputs) == len(teacher) - 2:  # every layer ran: index by original layer
        outputs = [run_outputs[layer] for layer in kept_layers[:-1]]
    else:  # only the kept layers ran, in order
        outputs = list(run_outputs)
    pairs = [(output, teacher[1 + layer]) for output, layer in zip(outputs, kept_layers[:-1], strict=True)]
    return pairs + [(student[-1], teacher[-1])]


def hidden_state_loss(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean over the pairs of the MSE between student and teacher hidden states, over real (unpadded) tokens."""
    if not pairs:
        return torch.zeros(())
    losses = []
    for student, teacher in pairs:
        squared = (student.float() - teacher.float()).pow(2).mean(dim=-1)
        if attention_mask is None:
            losses.append(squared.mean())
        else:
            # Multiple choice: hidden states of [batch * choices] sequences, a mask of [batch, choices, tokens].
            weights = attention_mask.reshape(squared.shape).to(squared.dtype)
            losses.append((squared * weights).sum() / weights.sum())
    return torch.stack(losses).mean()


class SamplingStrategy:
    """Plans the passes of one training step; its random sub-networks come from `sampler`."""

    distill = False  # whether the sub-networks learn from a teacher

    def __init__(
        self,
        search_space: SearchSpace,
        num_random_sub_nets: int,
        sampler: SubNetworkSampler,
        distill_full_network: bool = False,
    ):
        self.search_space = search_space
        self.num_random_sub_nets = num_random_sub_nets
        self.sampler = sampler
        self.distill_full_network = distill_full_network  # only with a fine-tuned teacher

    def plan(self, step: int, total_steps: int, rng: np.random.Generator) -> list[PlannedPass]:
        raise NotImplementedError

    def _random(self, rng: np.random.Generator, distill: bool) -> list[PlannedPass]:
        return [
            PlannedPass("random", self.sampler.sample(rng), distill) for _ in range(self.num_random_sub_nets)
        ]


class Standard(SamplingStrategy):
    def plan(self, step, total_steps, rng):
        return [PlannedPass("largest", None, distill=self.distill_full_network)]


class Random(SamplingStrategy):
    def plan(self, step, total_steps, rng):
        return self._random(rng, distill=False)


class LinearRandom(SamplingStrategy):
    def plan(self, step, total_steps, rng):
        if rng.random() < step / max(total_steps, 1):
            return self._random(rng, distill=self.distill)
        return [PlannedPass("largest", None, distill=self.distill_full_network)]


class KnowledgeDistillation(LinearRandom):
    distill = True


class Sandwich(SamplingStrategy):
    def plan(self, step, total_steps, rng):
        return [
            PlannedPass("largest", None, distill=self.distill_full_network),
            PlannedPass("smallest", self.search_space.smallest(), distill=self.distill),
            *self._random(rng, distill=self.distill),
        ]


class OneShot(Sandwich):
    distill = True


class Alternating(SamplingStrategy):
    """Whittle's ATS: random sub-networks on even steps, the full network on odd ones.

    Whittle distils only when given a distillation loss, and then from the full network's outputs of the
    same step, computed before the sub-networks run; here the sub-networks always distil, as in kd: from
    a fine-tuned teacher if given, else from the full network in place (a gradient-free extra pass).
    """

    distill = True

    def plan(self, step, total_steps, rng):
        if step % 2 == 0:
            return self._random(rng, distill=self.distill)
        return [PlannedPass("largest", None, distill=self.distill_full_network)]


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
    "ats": Alternating,
    "none": NoTraining,
}


def make_sampling_strategy(
    name: str,
    search_space: SearchSpace,
    num_random_sub_nets: int,
    distill_full_network: bool = False,
    sampler: SubNetworkSampler | None = None,
) -> SamplingStrategy:
    """`distill_full_network`: the full network learns from the (fine-tuned) teacher too, not from the labels;
    `sampler` draws the random sub-networks (by default the search space's uniform sampler)."""
    if name not in SAMPLING_STRATEGIES:
        raise UsageError(f"unknown sampling strategy '{name}'; choose one of: {', '.join(SAMPLING_STRATEGIES)}")
    if num_random_sub_nets < 1:
        raise UsageError(f"--num_random_sub_nets must be at least 1, got {num_random_sub_nets}")
    return SAMPLING_STRATEGIES[name](search_space, num_random_sub_nets, sampler or search_space, distill_full_network)


def kept_layers(sub_network: SubNetwork | None, num_layers: int) -> list[int]:
    """Original indices of the layers a pass runs (all of them for the full network)."""
    if sub_network is None:
        return list(range(num_layers))
    return [layer for layer in range(num_layers) if sub_network.keeps_layer(layer)]


def forward(
    model: nn.Module, batch: dict[str, torch.Tensor], objective: TrainingObjective, with_hidden_states: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """A pass's logits (float) and, when asked, its hidden states (HF's output_hidden_states)."""
    if not with_hidden_states:
        return objective.logits(model, batch).float(), None
    outputs = model(**{key: value for key, value in batch.items() if key != "labels"}, output_hidden_states=True)
    return outputs.logits.float(), outputs.hidden_states


def train_sub_network(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    planned: PlannedPass,
    run_as: SubNetworkRunner,
    targets: DistillationTargets | None,
    temperature: float,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    objective: TrainingObjective = CLASSIFICATION,
    with_hidden_states: bool = False,
) -> tuple[torch.Tensor, DistillationTargets]:
    """Forward and backward of one sub-network on one batch; returns (loss, its detached outputs).

    `batch["labels"]` are the labels the loss sees (standardised for regression by `training_step`);
    `with_hidden_states`: return the hidden states too (the full network teaching in place).
    """
    learns_hidden_states = planned.distill and targets.hidden_states is not None
    context = nullcontext() if planned.sub_network is None else run_as(model, planned.sub_network)
    with context:
        with autocast():
            logits, hidden_states = forward(model, batch, objective, with_hidden_states or learns_hidden_states)
            if planned.distill:
                loss = objective.distillation_loss(logits, targets.logits, batch["labels"], temperature)
                if learns_hidden_states:
                    num_layers = len(targets.hidden_states) - 1
                    pairs = corresponding_hidden_states(
                        hidden_states, targets.hidden_states, kept_layers(planned.sub_network, num_layers)
                    )
                    loss = loss + hidden_state_loss(pairs, batch.get("attention_mask"))
            else:
                loss = objective.loss(logits, batch["labels"])
        backward(loss)
    taught = tuple(h.detach() for h in hidden_states) if with_hidden_states else None
    return loss.detach(), DistillationTargets(logits.detach(), taught)


def training_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    passes: list[PlannedPass],
    run_as: SubNetworkRunner,
    temperature: float,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    objective: TrainingObjective = CLASSIFICATION,
    *,
    label_scale: LabelScale | None = None,
    teacher: Teacher | None = None,
    distill_hidden_states: bool = False,
) -> dict[str, float]:
    """Run the planned passes, accumulating gradients; returns the mean loss per role.

    Regression labels are standardised with `label_scale` for every loss. Distilled passes learn from
    `teacher` (a frozen fine-tuned model) if given, else from the full network of this step: its
    pass in the plan, or an extra gradient-free pass when the plan has none first.
    """
    batch = standardised(batch, label_scale)
    targets = None
    if any(planned.distill for planned in passes):
        if teacher is not None:
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            targets = teacher.targets(inputs, distill_hidden_states, autocast)
        elif passes[0].sub_network is not None:
            with torch.no_grad(), autocast():
                targets = DistillationTargets(*forward(model, batch, objective, distill_hidden_states))
    losses: dict[str, list[float]] = {}
    for planned in passes:
        in_place_teacher = planned.sub_network is None and targets is None
        loss, outputs = train_sub_network(
            model, batch, planned, run_as, targets, temperature, backward, autocast, objective,
            with_hidden_states=distill_hidden_states and in_place_teacher,
        )
        if in_place_teacher:
            targets = outputs
        losses.setdefault(planned.role, []).append(loss.item())
    return {role: float(np.mean(values)) for role, values in losses.items()}
