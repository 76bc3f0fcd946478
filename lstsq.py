"""Layer-wise least-squares mask tuning (Kwon et al. 2022): rescale the kept units, no gradient steps.

A block (attention or FFN) of a layer outputs the sum of its units' contributions through its output
projection: y = sum_u s_u X_u W_u^T (X_u: the unit's slice of the projection's input, W_u: the
projection's columns for it, s_u = 1). Pruning drops units; the kept ones can be rescaled so that their
sum best matches what the unpruned model's block outputs. Per block, over calibration tokens:

    min_s || sum_{u kept} s_u Xp_u W_u^T - sum_{v all} Xf_v W_v^T ||^2

with Xp the pruned model's input to the projection (earlier blocks already tuned, so errors do not
pile up) and Xf the unpruned model's. It is linear in s; its normal equations need only the Gram
matrices Xp^T Xp and Xp^T Xf (width x width, summed over tokens) and W^T W, so the calibration
activations are never stored. Blocks are tuned in order, one calibration pass each. The scales are
folded into the projection's columns (`fold_scales`): the tuned model keeps its shapes and
parameter count, and extraction slices it like any other.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from data import make_dataloader
from extract import extract_sub_network
from families import family_for, layer_parameters, layers_of
from mask import masked
from sampling import CLASSIFICATION, TrainingObjective
from sub_network import SubNetwork, unit_index


@dataclass(frozen=True)
class Block:
    """One output projection: the attention block's or the FFN block's of a layer."""

    layer: int
    is_attention: bool

    def kept_units(self, sub_network: SubNetwork) -> torch.Tensor:
        unit_mask = sub_network.head_mask if self.is_attention else sub_network.ffn_mask
        return unit_mask[self.layer].nonzero().flatten()


def _projection(model: nn.Module, block: Block) -> tuple[nn.Module, torch.Tensor, int, int]:
    """(module, weight, the weight's input dim, the width of one unit on it) of the block's output projection."""
    family = family_for(model)
    layer = layers_of(model)[block.layer]
    path = family.attention_out_proj if block.is_attention else family.ffn_down_proj
    for param, tensor in layer_parameters(model, layer):
        if param.path == f"{path}.weight":
            width = family.head_dim(model.config) * family.query_heads_per_unit(model.config)
            return layer.get_submodule(path), tensor, param.dim, width if block.is_attention else 1
    raise ValueError(f"{path}.weight is not a sliced parameter of the family table")


def _unit_columns(model: nn.Module, block: Block, units: torch.Tensor) -> torch.Tensor:
    family = family_for(model)
    layer = layers_of(model)[block.layer]
    path = family.attention_out_proj if block.is_attention else family.ffn_down_proj
    axis = next(param.axis for param, _ in layer_parameters(model, layer) if param.path == f"{path}.weight")
    return unit_index(family, model.config, units, axis)


def _weight_gram(weight: torch.Tensor, input_dim: int) -> torch.Tensor:
    """W^T W over the projection's input columns (orientation-free: nn.Linear and GPT-2's Conv1D)."""
    columns = weight.detach().float().movedim(input_dim, 1)  # [out, in]
    return columns.T @ columns


def _unit_sums(matrix: torch.Tensor, width: int) -> torch.Tensor:
    """Sum a [W, W] matrix over `width` x `width` blocks: [W / width, W / width]."""
    units = matrix.shape[0] // width
    return matrix.reshape(units, width, units, width).sum(dim=(1, 3))


class _Captured(Exception):
    """Raised once a projection's input is captured: the rest of the forward pass is not needed."""


class _Inputs:
    """Forward pre-hook keeping the projection's input (float64, one row per token), then ending the pass."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.inputs.append(args[0].detach().double().reshape(-1, args[0].shape[-1]))
        raise _Captured


def _run_until_captured(model: nn.Module, batch: dict, objective: TrainingObjective) -> None:
    try:
        objective.logits(model, batch)
    except _Captured:
        pass


@torch.no_grad()
def block_gram(
    pruned: nn.Module, full: nn.Module, sub_network: SubNetwork, block: Block, batches: Sequence[dict],
    objective: TrainingObjective = CLASSIFICATION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Xp^T Xp, Xp^T Xf) summed over the tokens of `batches` at the block's output projection (padding included).

    Only the removed units' columns of Xp differ between masked and unmasked inputs, and they are never used,
    so the capture may run before the masking hooks. Each pass ends at the projection (later layers unused).
    """
    captured_pruned, captured_full = _Inputs(), _Inputs()
    gram_pp = gram_pf = None
    pruned_module = _projection(pruned, block)[0]
    full_module = _projection(full, block)[0]
    handles = [
        pruned_module.register_forward_pre_hook(captured_pruned),
        full_module.register_forward_pre_hook(captured_full),
    ]
    try:
        for batch in batches:
            batch = {key: value.to(pruned.device) for key, value in batch.items()}
            with masked(pruned, sub_network):
                _run_until_captured(pruned, batch, objective)
            _run_until_captured(full, batch, objective)
            x_pruned, x_full = captured_pruned.inputs.pop(), captured_full.inputs.pop()
            gram_pp = x_pruned.T @ x_pruned + (0 if gram_pp is None else gram_pp)
            gram_pf = x_pruned.T @ x_full + (0 if gram_pf is None else gram_pf)
    finally:
        for handle in handles:
            handle.remove()
    return gram_pp.cpu(), gram_pf.cpu()


def solve_scales(
    gram_pp: torch.Tensor, gram_pf: torch.Tensor, weight_gram: torch.Tensor, unit_width: int, kept: torch.Tensor
) -> torch.Tensor:
    """The least-squares scales of the kept units (normal equations G s = r, solved by lstsq for rank deficiency)."""
    weight_gram = weight_gram.double()
    per_unit_pp = _unit_sums(gram_pp * weight_gram, unit_width)  # <Xp_u W_u^T, Xp_v W_v^T>
    per_unit_pf = _unit_sums(gram_pf * weight_gram, unit_width)  # <Xp_u W_u^T, Xf_v W_v^T>
    system = per_unit_pp[kept][:, kept]
    target = per_unit_pf[kept].sum(dim=1, keepdim=True)
    return torch.linalg.lstsq(system, target).solution.flatten().float()


@torch.no_grad()
def fold_scales(model: nn.Module, block: Block, units: torch.Tensor, scales: torch.Tensor) -> None:
    """Multiply each unit's input columns of the block's output projection by its scale, in place."""
    _, weight, input_dim, width = _projection(model, block)
    columns = _unit_columns(model, block, units).to(weight.device)
    shape = [1] * weight.dim()
    shape[input_dim] = len(columns)
    column_scales = scales.to(weight.device, weight.dtype).repeat_interleave(width).reshape(shape)
    weight.index_copy_(input_dim, columns, weight.index_select(input_dim, columns) * column_scales)


def tune_masks(
    pruned: nn.Module, full: nn.Module, sub_network: SubNetwork, batches: Sequence[dict],
    objective: TrainingObjective = CLASSIFICATION,
) -> dict[str, list[list[float]]]:
    """Rescale the kept units of `pruned` (a copy of `full`, changed in place) block by block; returns the scales.

    Blocks that keep every unit or none are left alone (nothing to compensate, or nothing to rescale).
    """
    was_training = (pruned.training, full.training)
    pruned.eval()
    full.eval()
    scales: dict[str, list[list[float]]] = {"heads": [], "neurons": []}
    try:
        for layer in range(sub_network.num_layers):
            for block in (Block(layer, True), Block(layer, False)):
                kept = block.kept_units(sub_network)
                total = (sub_network.head_mask if block.is_attention else sub_network.ffn_mask).shape[1]
                block_scales = torch.ones(len(kept))
                if 0 < len(kept) < total:
                    _, weight, input_dim, width = _projection(full, block)
                    gram_pp, gram_pf = block_gram(pruned, full, sub_network, block, batches, objective)
                    block_scales = solve_scales(gram_pp, gram_pf, _weight_gram(weight, input_dim).cpu(), width, kept)
                    fold_scales(pruned, block, kept, block_scales)
                scales["heads" if block.is_attention else "neurons"].append(block_scales.tolist())
    finally:
        pruned.train(was_training[0])
        full.train(was_training[1])
    return scales


def calibration_batches(
    train_set: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, num_samples: int, batch_size: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """A seeded random subset of `num_samples` training examples (all if fewer), in batches, for the calibration."""
    subset = train_set.shuffle(seed=seed).select(range(min(num_samples, len(train_set))))
    return list(make_dataloader(subset, tokenizer, batch_size, False, 0))


def tuned_extraction(
    model: nn.Module, sub_network: SubNetwork, batches: Sequence[dict]
) -> tuple[nn.Module, dict[str, list[list[float]]]]:
    """`sub_network` of `model`, extracted after least-squares tuning against `model`'s full network (on a copy)."""
    tuned = copy.deepcopy(model)
    scales = tune_masks(tuned, model, sub_network, batches)
    return extract_sub_network(tuned, sub_network), scales
