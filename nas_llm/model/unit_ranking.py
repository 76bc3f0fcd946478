"""Which units an importance-shaped sub-network keeps: one importance ranking over all layers, as RFP's.

Retraining-free pruning (Kwon et al. 2022) keeps the units whose importance passes one threshold shared by all
layers, so that layer widths differ; the `small` space keeps the same width in every kept layer and always the first
layers. This module gives a super-network whose units are stored most important first (`--reorder_units
importance`) the same freedom: a share of the units, ranked over all kept layers, becomes a count per layer (a
prefix of its stored units, so slicing stays as fast as for `small`); and the kept layers are the most important
ones rather than the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class UnitScores:
    """Importance of every head unit and neuron, in the order the super-network stores them (most important first
    in each layer)."""

    heads: torch.Tensor  # [layers, head units]
    neurons: torch.Tensor  # [layers, intermediate size]

    def __post_init__(self) -> None:
        for name, scores in (("heads", self.heads), ("neurons", self.neurons)):
            if scores.dim() != 2 or bool((scores[:, 1:] > scores[:, :-1]).any()):
                raise ValueError(f"{name} scores must be [layers, units], most important first in each layer: "
                                 "the super-network stores its units in importance order (--reorder_units importance)")

    def layer_scores(self) -> torch.Tensor:
        """A layer's share of all heads' importance plus its share of all neurons' (the two Fisher scores come
        from different masks and are not on one scale)."""
        return share_of_total(self.heads.sum(1)) + share_of_total(self.neurons.sum(1))


def share_of_total(values: torch.Tensor) -> torch.Tensor:
    total = values.sum()
    return values / total if total > 0 else torch.full_like(values, 1 / len(values))


def most_important_layers(layer_scores: torch.Tensor, count: int) -> list[int]:
    """The `count` layers with the highest scores (the earlier layer on a tie), in layer order."""
    ranked = sorted(range(len(layer_scores)), key=lambda layer: (-float(layer_scores[layer]), layer))
    return sorted(ranked[:count])


def counts_within_global_share(scores: torch.Tensor, layers: list[int], share: float) -> list[int]:
    """Per layer, how many of its units are among the most important `share` of all units of `layers` (ranked
    together; on a tie the earlier layer, then the earlier unit, first); 0 for the layers not listed."""
    units = scores.shape[1]
    keep = int(share * units * len(layers) + 0.5)
    owners = torch.tensor(layers, dtype=torch.long).repeat_interleave(units)  # layer-major, as flatten() lists
    ranked = torch.argsort(scores[layers].flatten(), descending=True, stable=True)
    return torch.bincount(owners[ranked[:keep]], minlength=scores.shape[0]).tolist()
