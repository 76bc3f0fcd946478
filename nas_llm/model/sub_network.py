"""The one notion of a sub-network: which layers, head units and FFN neurons are kept.

Search spaces produce a `SubNetwork`, sampling strategies train it, masking and slicing execute
it, `cost.py` measures it and extraction writes it out. It is stored as two boolean masks, as
in the original example (`head_mask[L, H]`, `ffn_mask[L, I]`, True = keep), and serialised as
JSON lists of kept indices (never pickled).

A layer whose heads are all removed runs its attention block as the identity; a layer whose
neurons are all removed runs its FFN block as the identity; a layer with neither is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas_llm.model.families import Family, ParamAxis


@dataclass(frozen=True, eq=False)
class SubNetwork:
    head_mask: torch.Tensor  # bool [num_layers, num_head_units]
    ffn_mask: torch.Tensor  # bool [num_layers, intermediate_size]

    def __post_init__(self) -> None:
        if self.head_mask.dim() != 2 or self.ffn_mask.dim() != 2:
            raise ValueError("head_mask and ffn_mask must be 2-d: [num_layers, units]")
        if self.head_mask.shape[0] != self.ffn_mask.shape[0]:
            raise ValueError(
                f"head_mask has {self.head_mask.shape[0]} layers but ffn_mask has {self.ffn_mask.shape[0]}"
            )
        object.__setattr__(self, "head_mask", self.head_mask.detach().to("cpu", torch.bool))
        object.__setattr__(self, "ffn_mask", self.ffn_mask.detach().to("cpu", torch.bool))

    @classmethod
    def full(cls, num_layers: int, num_head_units: int, intermediate_size: int) -> SubNetwork:
        return cls(
            torch.ones(num_layers, num_head_units, dtype=torch.bool),
            torch.ones(num_layers, intermediate_size, dtype=torch.bool),
        )

    @property
    def num_layers(self) -> int:
        return self.head_mask.shape[0]

    def kept_heads(self, layer: int) -> list[int]:
        return self.head_mask[layer].nonzero().flatten().tolist()

    def kept_neurons(self, layer: int) -> list[int]:
        return self.ffn_mask[layer].nonzero().flatten().tolist()

    def keeps_attention(self, layer: int) -> bool:
        return bool(self.head_mask[layer].any())

    def keeps_ffn(self, layer: int) -> bool:
        return bool(self.ffn_mask[layer].any())

    def keeps_layer(self, layer: int) -> bool:
        return self.keeps_attention(layer) or self.keeps_ffn(layer)

    def is_full(self) -> bool:
        return bool(self.head_mask.all() and self.ffn_mask.all())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubNetwork):
            return NotImplemented
        return torch.equal(self.head_mask, other.head_mask) and torch.equal(self.ffn_mask, other.ffn_mask)

    def summary(self) -> dict[str, list[int]]:
        """Heads and neurons kept per layer: short enough for logs and results files."""
        return {
            "heads_per_layer": self.head_mask.sum(dim=1).tolist(),
            "neurons_per_layer": self.ffn_mask.sum(dim=1).tolist(),
        }

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "num_head_units": self.head_mask.shape[1],
            "intermediate_size": self.ffn_mask.shape[1],
            "kept_heads": [self.kept_heads(layer) for layer in range(self.num_layers)],
            "kept_neurons": [self.kept_neurons(layer) for layer in range(self.num_layers)],
        }

    def to_compact(self) -> dict[str, Any]:
        """The masks as hex bit strings: a few KB for bert-base, for logs with one line per sub-network."""
        return {
            "shape": [self.num_layers, self.head_mask.shape[1], self.ffn_mask.shape[1]],
            "head_mask": np.packbits(self.head_mask.numpy()).tobytes().hex(),
            "ffn_mask": np.packbits(self.ffn_mask.numpy()).tobytes().hex(),
        }

    @classmethod
    def from_compact(cls, data: dict[str, Any]) -> SubNetwork:
        num_layers, num_head_units, intermediate_size = data["shape"]

        def unpack(hex_bits: str, width: int) -> torch.Tensor:
            bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8))[: num_layers * width]
            return torch.from_numpy(bits.astype(bool)).reshape(num_layers, width)

        return cls(unpack(data["head_mask"], num_head_units), unpack(data["ffn_mask"], intermediate_size))

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> SubNetwork:
        num_layers = len(data["kept_heads"])
        head_mask = torch.zeros(num_layers, data["num_head_units"], dtype=torch.bool)
        ffn_mask = torch.zeros(num_layers, data["intermediate_size"], dtype=torch.bool)
        for layer, (heads, neurons) in enumerate(zip(data["kept_heads"], data["kept_neurons"], strict=True)):
            head_mask[layer, heads] = True
            ffn_mask[layer, neurons] = True
        return cls(head_mask, ffn_mask)


def kept_index(
    family: Family, config, sub_network: SubNetwork, layer: int, axis: ParamAxis
) -> torch.Tensor | None:
    """Indices kept along a sliced axis of one layer's parameter.

    Returns None for ATTENTION_BLOCK / FFN_BLOCK parameters, which are kept whole or not at all
    (see `keeps_param`).
    """
    if axis in (ParamAxis.ATTENTION_BLOCK, ParamAxis.FFN_BLOCK):
        return None
    unit_mask = sub_network.ffn_mask if axis is ParamAxis.NEURON else sub_network.head_mask
    return unit_index(family, config, unit_mask[layer].nonzero().flatten(), axis)


def unit_index(family: Family, config, units: torch.Tensor, axis: ParamAxis) -> torch.Tensor:
    """Indices along a parameter's sliced axis that hold `units` (neurons or head units), in their order.

    Sorted units give a slice (`kept_index`); a permutation of all units reorders the axis
    (`reorder.py`). Under grouped-query attention a head unit is a KV group with its query heads.
    """
    if axis is ParamAxis.NEURON:
        return units
    head_dim = family.head_dim(config)
    offsets = torch.arange(head_dim)
    if axis is ParamAxis.KV_HEAD:
        return (units[:, None] * head_dim + offsets).flatten()
    per_unit = family.query_heads_per_unit(config)
    query_heads = (units[:, None] * per_unit + torch.arange(per_unit)).flatten()
    query_index = (query_heads[:, None] * head_dim + offsets).flatten()
    if axis is ParamAxis.HEAD:
        return query_index
    if axis is ParamAxis.QKV_FUSED:
        width = family.num_query_heads(config) * head_dim
        return torch.cat([query_index, query_index + width, query_index + 2 * width])
    if axis is ParamAxis.QKV_PER_HEAD:
        return (query_heads[:, None] * 3 * head_dim + torch.arange(3 * head_dim)).flatten()
    raise ValueError(f"unknown axis {axis}")


def keeps_param(sub_network: SubNetwork, layer: int, axis: ParamAxis) -> bool:
    """Whether any part of a parameter on this axis survives in the layer."""
    if axis in (ParamAxis.NEURON, ParamAxis.FFN_BLOCK):
        return sub_network.keeps_ffn(layer)
    return sub_network.keeps_attention(layer)
