"""Run a HF model as one of its sub-networks by masking (the reference execution path).

transformers 5 still accepts a `head_mask` argument but silently ignores it, so masks are
applied with hooks instead:
- heads: a forward pre-hook on the attention output projection zeroes the removed heads'
  slices of its input (the concatenated head outputs),
- neurons: a forward pre-hook on the FFN down projection zeroes the removed neurons,
- a block that keeps no head (no neuron) runs as the identity, as in the original example:
  its output is its residual input (post-LN) or zeros added to the residual stream (pre-LN).

Masking keeps every multiply of the full network; `slicing.py` is the fast path. Masking is the
simple, obviously-correct reference that tests and benchmarks compare against.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nas_llm.model.families import family_for, layers_of
from nas_llm.model.pruned_structure import identity_forward
from nas_llm.model.sub_network import SubNetwork


def scale_units(unit_mask: torch.Tensor, unit_width: int):
    """Pre-hook multiplying each `unit_width`-wide slice of the input's last dim by its mask (differentiable)."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        shape = hidden.shape
        mask = unit_mask.to(device=hidden.device, dtype=hidden.dtype)
        masked = (hidden.reshape(*shape[:-1], -1, unit_width) * mask[:, None]).reshape(shape)
        return (masked, *args[1:])

    return hook


@contextmanager
def skipped_empty_blocks(model: nn.Module, sub_network: SubNetwork) -> Iterator[nn.Module]:
    """Run every block that keeps no head (no neuron) as the identity, as the original example did.

    The block's own `forward` is shadowed by an instance attribute and restored on exit, so the
    block costs nothing; attention blocks return (hidden_states, None) like the real ones.
    """
    family = family_for(model)
    skipped = []
    try:
        for index, layer in enumerate(layers_of(model)):
            for path, residual_arg, returns_tuple in family.skipped_modules(sub_network, index):
                module = layer.get_submodule(path)
                module.forward = identity_forward(residual_arg, returns_tuple)
                skipped.append(module)
        yield model
    finally:
        for module in skipped:
            del module.forward


@contextmanager
def masked(model: nn.Module, sub_network: SubNetwork) -> Iterator[nn.Module]:
    """Context in which `model` computes `sub_network`; the model is always restored on exit."""
    family = family_for(model)
    config = model.config
    head_dim = family.head_dim(config)
    per_unit = family.query_heads_per_unit(config)
    handles = []
    try:
        for index, layer in enumerate(layers_of(model)):
            if sub_network.keeps_attention(index) and not sub_network.head_mask[index].all():
                query_head_mask = sub_network.head_mask[index].repeat_interleave(per_unit)
                handles.append(
                    layer.get_submodule(family.attention_out_proj).register_forward_pre_hook(
                        scale_units(query_head_mask, head_dim)
                    )
                )
            if sub_network.keeps_ffn(index) and not sub_network.ffn_mask[index].all():
                handles.append(
                    layer.get_submodule(family.ffn_down_proj).register_forward_pre_hook(
                        scale_units(sub_network.ffn_mask[index], 1)
                    )
                )
        with skipped_empty_blocks(model, sub_network):
            yield model
    finally:
        for handle in handles:
            handle.remove()
