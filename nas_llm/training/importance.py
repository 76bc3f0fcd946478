"""How much the task loss depends on each head unit and FFN neuron: Fisher information of unit masks.

Every head unit (one head; a KV group with its query heads under grouped-query attention) and every
FFN neuron gets a gate m = 1 that scales its output where `mask.py` zeroes it: the input of the
attention output projection and of the FFN down projection. The importance of a unit is the
empirical Fisher information of its gate, the sum over training batches of (dL/dm)^2, as in Kwon et
al. 2022 ("A Fast Post-Training Pruning Framework for Transformers"). It is the diagonal of the
Fisher matrix that approximates the loss increase of dropping units, and squaring keeps batches whose
gradients have opposite signs from cancelling, which Michel et al. 2019's |sum of gradients| lets
happen. The per-batch gradients are returned too: Kwon et al.'s mask search and mask rearrangement
need the Fisher matrix within a layer, not only its diagonal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas_llm.model.families import family_for, layers_of
from nas_llm.model.mask import scale_units
from nas_llm.training.objective import CLASSIFICATION, TrainingObjective


@dataclass(frozen=True)
class MaskGradients:
    """Gradients of the loss with respect to all-ones unit masks, one row per batch."""

    heads: torch.Tensor  # [batches, layers, head units]
    neurons: torch.Tensor  # [batches, layers, intermediate size]


@dataclass(frozen=True)
class UnitImportance:
    """Per-layer importance of head units and neurons (higher = the loss depends more on the unit)."""

    heads: torch.Tensor  # [layers, head units]
    neurons: torch.Tensor  # [layers, intermediate size]
    num_batches: int

    @classmethod
    def from_gradients(cls, gradients: MaskGradients) -> UnitImportance:
        """Empirical Fisher information: the sum over batches of the squared mask gradients."""
        return cls(gradients.heads.pow(2).sum(0), gradients.neurons.pow(2).sum(0), len(gradients.heads))

    def head_order(self) -> torch.Tensor:
        """Per layer, the head units from most to least important (ties keep their original order)."""
        return torch.argsort(self.heads, dim=1, descending=True, stable=True)

    def neuron_order(self) -> torch.Tensor:
        return torch.argsort(self.neurons, dim=1, descending=True, stable=True)

    def to_json_dict(self) -> dict[str, Any]:
        """Scores indexed by the units' original positions; `*_order[l][k]` is the unit stored k-th after reordering."""
        return {
            "estimator": "fisher: sum over batches of squared mask gradients (Kwon et al. 2022)",
            "num_batches": self.num_batches,
            "head_importance": self.heads.tolist(),
            "neuron_importance": self.neurons.tolist(),
            "head_order": self.head_order().tolist(),
            "neuron_order": self.neuron_order().tolist(),
        }

    @classmethod
    def from_json_dict(cls, recorded: dict[str, Any]) -> UnitImportance:
        """The scores `to_json_dict` wrote (the orders follow from them)."""
        return cls(torch.tensor(recorded["head_importance"]), torch.tensor(recorded["neuron_importance"]),
                   recorded["num_batches"])


@contextmanager
def unit_gates(model: nn.Module) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """All-ones gates (leaf tensors requiring grad) on every layer's head units and neurons; removed on exit."""
    family = family_for(model)
    config = model.config
    unit_width = family.head_dim(config) * family.query_heads_per_unit(config)  # a unit's query heads are adjacent
    device = model.device
    head_gates, neuron_gates, handles = [], [], []
    try:
        for layer in layers_of(model):
            head_gate = torch.ones(family.num_head_units(config), device=device, requires_grad=True)
            neuron_gate = torch.ones(family.intermediate_size(config), device=device, requires_grad=True)
            handles.append(
                layer.get_submodule(family.attention_out_proj).register_forward_pre_hook(
                    scale_units(head_gate, unit_width)
                )
            )
            handles.append(
                layer.get_submodule(family.ffn_down_proj).register_forward_pre_hook(scale_units(neuron_gate, 1))
            )
            head_gates.append(head_gate)
            neuron_gates.append(neuron_gate)
        yield head_gates, neuron_gates
    finally:
        for handle in handles:
            handle.remove()


def mask_gradients(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], objective: TrainingObjective = CLASSIFICATION
) -> MaskGradients:
    """dLoss/dmask of every head unit and neuron on each batch, in eval mode (no dropout); weights untouched.

    The loss is the task's (`objective`: classification, or the next-token loss of language modelling).
    """
    was_training = model.training
    model.eval()
    head_rows, neuron_rows = [], []
    try:
        with unit_gates(model) as (head_gates, neuron_gates):
            for batch in batches:
                batch = {key: value.to(model.device) for key, value in batch.items()}
                loss = objective.loss(objective.logits(model, batch).float(), batch["labels"])
                gradients = torch.autograd.grad(loss, head_gates + neuron_gates)
                head_rows.append(torch.stack(gradients[: len(head_gates)]).cpu())
                neuron_rows.append(torch.stack(gradients[len(head_gates):]).cpu())
    finally:
        model.train(was_training)
    if not head_rows:
        raise ValueError("no batches to compute mask gradients on")
    return MaskGradients(torch.stack(head_rows), torch.stack(neuron_rows))


def unit_importance(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], objective: TrainingObjective = CLASSIFICATION
) -> UnitImportance:
    """Fisher importance of every head unit and neuron on `batches` (e.g. a few training batches)."""
    return UnitImportance.from_gradients(mask_gradients(model, batches, objective))
