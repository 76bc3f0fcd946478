"""Layer-wise least-squares mask tuning (Kwon et al. 2022): rescale the kept units, no gradient steps.

A block (attention or FFN) adds to the residual stream the sum of its units' contributions through its output
projection: y = sum_u s_u X_u W_u^T (X_u: the unit's slice of the projection's input, W_u: the projection's
columns for it, s_u = 1). Pruning drops units, and the blocks before have already moved the residual stream r
the block adds to. As in Kwon et al., the kept units are rescaled so that the stream after the block best
matches the unpruned model's, over the calibration tokens (padding excluded):

    min_s || r_p + sum_{u kept} s_u Xp_u W_u^T - (r_f + sum_{v all} Xf_v W_v^T) ||^2

(p: the pruned model, its earlier blocks already tuned; f: the unpruned model; the projection's bias is on both
sides and cancels). So a block also compensates what earlier blocks lost, and blocks that keep every unit are
tuned too. For d = s - 1 this is min_d || sum_u d_u A_u + E ||^2 with A_u = Xp_u W_u^T and E the drift at
s = 1; its normal equations need only Xp^T Xp, Xp^T E and W, so no block's activations are stored. The
least-norm d is taken where the system is singular (scales stay near 1), and a block whose scales would leave
[-10, 10] keeps its scales at 1, as Kwon et al. guard against ill-conditioned blocks. Blocks are tuned in
order, one calibration pass each. Once a layer's two blocks are tuned, its outputs are captured in one more
pass and kept, and the next layer's passes start from them instead of from the embeddings: the same inputs bit
for bit, for 40% of the forward work on MiniLM's 6 layers (less the deeper the model). The scales are folded
into the projection's columns (`fold_scales`): the tuned model keeps its shapes and parameter count, and
extraction slices it like any other.

Kwon et al. match only the [CLS] token at the last FFN of a classifier; here every token counts (the family
table does not say which token a family's head reads). For GPT-NeoX's parallel residual the FFN's residual
is taken as the layer's input.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from nas_llm.data.data import make_dataloader
from nas_llm.extraction.extract import extract_sub_network
from nas_llm.model.families import family_for, layer_parameters, layers_of
from nas_llm.model.mask import masked
from nas_llm.model.sub_network import SubNetwork, unit_index
from nas_llm.training.objective import CLASSIFICATION, TrainingObjective


@dataclass(frozen=True)
class Block:
    """One output projection: the attention block's or the FFN block's of a layer."""

    layer: int
    is_attention: bool

    def kept_units(self, sub_network: SubNetwork) -> torch.Tensor:
        unit_mask = sub_network.head_mask if self.is_attention else sub_network.ffn_mask
        return unit_mask[self.layer].nonzero().flatten()


def blocks_in_order(num_layers: int) -> list[Block]:
    """Every layer's attention block, then its FFN block, first layer first: the order the stream passes them."""
    return [Block(layer, is_attention) for layer in range(num_layers) for is_attention in (True, False)]


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


def _unit_sums(matrix: torch.Tensor, width: int) -> torch.Tensor:
    """Sum a [W, W] matrix over `width` x `width` blocks: [W / width, W / width]."""
    units = matrix.shape[0] // width
    return matrix.reshape(units, width, units, width).sum(dim=(1, 3))


MAX_SCALE = 10.0  # a block whose least-squares scales leave [-MAX_SCALE, MAX_SCALE] is left unscaled


def _residual_site(model: nn.Module, block: Block) -> tuple[nn.Module, tuple[int, str]]:
    """(module, its argument) that carries the residual stream the block adds to, read from the family table.

    Post-LayerNorm blocks (BERT) take the residual as an argument; a pre-LayerNorm block's norm reads it.
    """
    family = family_for(model)
    skip = family.attention_skip if block.is_attention else family.ffn_skip
    layer = layers_of(model)[block.layer]
    if skip.residual_arg is not None:
        return layer.get_submodule(skip.module), skip.residual_arg
    return layer.get_submodule(skip.norms[0]), (0, "hidden_states")


class _Captured(Exception):
    """Raised once a projection's input is captured: the rest of the forward pass is not needed."""


def _residual_hook(model: nn.Module, block: Block, residuals: list[torch.Tensor]):
    site, (position, name) = _residual_site(model, block)

    def keep_residual(module: nn.Module, args: tuple, kwargs: dict) -> None:
        residuals.append(_rows(args[position] if len(args) > position else kwargs[name]))

    return site.register_forward_pre_hook(keep_residual, with_kwargs=True)


def _rows(hidden: torch.Tensor) -> torch.Tensor:
    return hidden.detach().double().reshape(-1, hidden.shape[-1]).cpu()


def _real_tokens(batch: dict, rows: torch.Tensor) -> torch.Tensor:
    """The rows of real tokens (padding has no say in the fit); all rows when the batch has no padding mask."""
    attention_mask = batch.get("attention_mask")
    if attention_mask is None or attention_mask.numel() != len(rows):
        return rows
    return rows[attention_mask.reshape(-1).bool().cpu()]


def _run_until_captured(model: nn.Module, batch: dict, objective: TrainingObjective) -> None:
    try:
        objective.logits(model, batch)
    except _Captured:
        pass


def _on_device(batch: dict, model: nn.Module) -> dict:
    return {key: value.to(model.device) for key, value in batch.items()}


UnprunedStreams = list[dict[Block, torch.Tensor]]  # per calibration batch: each block's stream after it
LayerOutputs = list[Any]  # per calibration batch: what one layer of the pruned model returned (its stream)


@contextmanager
def _replayed(model: nn.Module, layer: int, output: Any) -> Iterator[None]:
    """The layers before `layer` return `output` (the stream after layer - 1, captured once) without computing:
    the pass starts at `layer`, whose input is then bit for bit that of a whole pass. Each layer's `forward` is
    shadowed by an instance attribute, as `mask.skipped_empty_blocks` shadows blocks, and restored on exit."""
    shadowed = list(layers_of(model))[:layer]
    try:
        for module in shadowed:
            module.forward = lambda *args, **kwargs: output
        yield
    finally:
        for module in shadowed:
            del module.forward


def _replaying(model: nn.Module, layer: int, stream: LayerOutputs | None, batch_index: int):
    """`_replayed` for one batch, or nothing to replay (the first layer, or no stream captured)."""
    return nullcontext() if stream is None or layer == 0 else _replayed(model, layer, stream[batch_index])


@torch.no_grad()
def layer_outputs(
    pruned: nn.Module, sub_network: SubNetwork, layer: int, batches: Sequence[dict], stream: LayerOutputs | None,
    objective: TrainingObjective = CLASSIFICATION,
) -> LayerOutputs:
    """What `layer` of the masked `pruned` returns on each batch, its input replayed from `stream` (the layer
    before's outputs): the next layer's blocks start from here instead of from the embeddings."""
    outputs: LayerOutputs = []

    def keep_output(module: nn.Module, args: tuple, output: Any) -> None:
        outputs.append(output)
        raise _Captured

    handle = layers_of(pruned)[layer].register_forward_hook(keep_output)
    try:
        for index, batch in enumerate(batches):
            with masked(pruned, sub_network), _replaying(pruned, layer, stream, index):
                _run_until_captured(pruned, _on_device(batch, pruned), objective)
    finally:
        handle.remove()
    return outputs


@torch.no_grad()
def unpruned_streams(
    full: nn.Module, batches: Sequence[dict], objective: TrainingObjective = CLASSIFICATION
) -> UnprunedStreams:
    """The unpruned model's residual stream right after every block (residual + projection output), real tokens
    only, float32: the targets of every tuning, in one pass, shared by every sub-network tuned against `full`."""
    blocks = blocks_in_order(len(layers_of(full)))
    residuals: dict[Block, list[torch.Tensor]] = {block: [] for block in blocks}
    outputs: dict[Block, list[torch.Tensor]] = {block: [] for block in blocks}
    handles = []
    for block in blocks:
        handles.append(_residual_hook(full, block, residuals[block]))
        handles.append(_projection(full, block)[0].register_forward_hook(
            lambda module, args, output, kept=outputs[block]: kept.append(_rows(output))))
    was_training = full.training
    full.eval()
    streams = []
    try:
        for batch in batches:
            objective.logits(full, _on_device(batch, full))
            streams.append({
                block: _real_tokens(batch, residuals[block].pop() + outputs[block].pop()).float() for block in blocks
            })
    finally:
        for handle in handles:
            handle.remove()
        full.train(was_training)
    return streams


@torch.no_grad()
def block_gram(
    pruned: nn.Module, sub_network: SubNetwork, block: Block, batches: Sequence[dict], targets: UnprunedStreams,
    objective: TrainingObjective = CLASSIFICATION, stream: LayerOutputs | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Xp^T Xp, Xp^T E) summed over the real tokens of `batches` at the block's output projection, over the
    kept units' input columns only (`_kept_columns`, in its order): a removed unit's columns are zero; and the
    projection's weight over those columns, [out, kept in] in double precision, which `solve_scales` needs too.

    E is the drift of the residual stream after the block at unit scales: r_p + Xp_kept W_kept^T + b minus the
    unpruned stream (`targets`). The pass starts at the block's layer when `stream` holds the layer before's
    outputs (`layer_outputs`), else at the embeddings, and ends at the projection.
    """
    module = _projection(pruned, block)[0]
    kept = _kept_columns(pruned, block, sub_network)
    columns = _projection_columns(pruned, block, kept).double()  # [out, kept in]
    bias = 0 if module.bias is None else module.bias.detach().double().cpu()
    residuals: list[torch.Tensor] = []
    inputs: list[torch.Tensor] = []

    def keep_input(module: nn.Module, args: tuple) -> None:
        inputs.append(_rows(args[0][..., kept.to(args[0].device)]))
        raise _Captured

    handles = [_residual_hook(pruned, block, residuals), module.register_forward_pre_hook(keep_input)]
    gram_pp = gram_pe = None
    try:
        for index, (batch, target) in enumerate(zip(batches, targets, strict=True)):
            with masked(pruned, sub_network), _replaying(pruned, block.layer, stream, index):
                _run_until_captured(pruned, _on_device(batch, pruned), objective)
            residual, x_kept = (_real_tokens(batch, rows) for rows in (residuals.pop(), inputs.pop()))
            drift = residual + x_kept @ columns.T + bias - target[block].double()
            gram_pp = x_kept.T @ x_kept + (0 if gram_pp is None else gram_pp)
            gram_pe = x_kept.T @ drift + (0 if gram_pe is None else gram_pe)
    finally:
        for handle in handles:
            handle.remove()
    return gram_pp, gram_pe, columns


def _kept_columns(model: nn.Module, block: Block, sub_network: SubNetwork) -> torch.Tensor:
    """The input columns of the block's output projection that the kept units feed, unit by unit."""
    return _unit_columns(model, block, block.kept_units(sub_network))


def _projection_columns(model: nn.Module, block: Block, columns: torch.Tensor) -> torch.Tensor:
    """The block's output projection's weight as [out, in], those input columns only, on the CPU."""
    _, weight, input_dim, _ = _projection(model, block)
    return weight.detach().movedim(input_dim, 1)[:, columns.to(weight.device)].cpu()


def solve_scales(gram_pp: torch.Tensor, gram_pe: torch.Tensor, weight: torch.Tensor, unit_width: int) -> torch.Tensor:
    """The least-squares scales of the kept units: 1 + d with G d = -c (least-norm d), or all 1 when a scale
    would leave [-MAX_SCALE, MAX_SCALE].

    weight: the projection's [out, kept in] columns, and the grams over the same columns (`block_gram`), unit by
    unit; G_uv = <Xp_u W_u^T, Xp_v W_v^T>, c_u = <Xp_u W_u^T, E>.
    """
    weight = weight.double()
    system = _unit_sums(gram_pp * (weight.T @ weight), unit_width)
    per_column = (gram_pe * weight.T).sum(dim=1)  # <Xp_i W_i^T, E> for every kept input column i
    target = per_column.reshape(-1, unit_width).sum(dim=1)
    scales = 1 + torch.linalg.lstsq(system, -target[:, None], driver="gelsd").solution.flatten()
    if not torch.isfinite(scales).all() or scales.abs().max() > MAX_SCALE:
        return torch.ones(len(target))
    return scales.float()


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
    objective: TrainingObjective = CLASSIFICATION, targets: UnprunedStreams | None = None,
) -> dict[str, list[list[float]]]:
    """Rescale the kept units of `pruned` (a copy of `full`, changed in place) block by block; returns the scales.

    Every block that keeps a unit is tuned (an empty block has nothing to rescale). `targets`: `full`'s
    `unpruned_streams` on `batches`, when several sub-networks are tuned against the same model.
    """
    targets = unpruned_streams(full, batches, objective) if targets is None else targets
    was_training = pruned.training
    pruned.eval()
    scales: dict[str, list[list[float]]] = {"heads": [], "neurons": []}
    blocks = blocks_in_order(sub_network.num_layers)
    stream = None  # the outputs of the last layer tuned, which the next layer's passes start from
    try:
        # calibration passes per block: minutes on a CPU, so with a bar (and prune.py's time left from it)
        for block in tqdm(blocks, desc="least-squares tuning, block by block"):
            kept = block.kept_units(sub_network)
            block_scales = torch.ones(len(kept))
            if len(kept):
                width = _projection(pruned, block)[3]
                gram_pp, gram_pe, weight = block_gram(pruned, sub_network, block, batches, targets, objective,
                                                      stream)
                block_scales = solve_scales(gram_pp, gram_pe, weight, width)
                fold_scales(pruned, block, kept, block_scales)
            scales["heads" if block.is_attention else "neurons"].append(block_scales.tolist())
            if not block.is_attention and block.layer + 1 < sub_network.num_layers:
                stream = layer_outputs(pruned, sub_network, block.layer, batches, stream, objective)
    finally:
        pruned.train(was_training)
    return scales


def calibration_batches(
    train_set: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, num_samples: int, batch_size: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """A seeded random subset of `num_samples` training examples (all if fewer), in batches, for the calibration."""
    subset = train_set.shuffle(seed=seed).select(range(min(num_samples, len(train_set))))
    return list(make_dataloader(subset, tokenizer, batch_size, False, 0))


def tuned_extraction(
    model: nn.Module, sub_network: SubNetwork, batches: Sequence[dict], targets: UnprunedStreams | None = None
) -> tuple[nn.Module, dict[str, list[list[float]]]]:
    """`sub_network` of `model`, extracted after least-squares tuning against `model`'s full network (on a copy);
    `targets`: `unpruned_streams(model, batches)` when several sub-networks of `model` are tuned."""
    tuned = copy.deepcopy(model)
    scales = tune_masks(tuned, model, sub_network, batches, targets=targets)
    return extract_sub_network(tuned, sub_network), scales
