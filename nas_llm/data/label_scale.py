"""Standardised regression labels: why a regression head trains, and how its outputs are read back.

A freshly initialised regression head outputs about 0 while STS-B labels lie in [0, 5] (mean 2.75);
trained on raw labels with MSE, the shared head of a super-network is pulled to a constant by the
many sub-networks of every step (one_shot on STS-B collapsed to Spearman 0.07). Training on labels
standardised with the training split's mean and standard deviation fixes that, and works for heads
without a bias (GPT-2, GPT-NeoX, Llama, Qwen2), which could not absorb the mean.

The statistics are part of the weights' meaning, so they live in the model's config
(`config.json` key `label_scale`): resumed, searched and extracted checkpoints read the stored
values and never recompute them. The model outputs standardised values; `to_label_scale` maps them
back wherever predictions are reported (evaluation.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

CONFIG_KEY = "label_scale"


@dataclass(frozen=True)
class LabelScale:
    """Labels are standardised as (label - mean) / std; model outputs are read back as output * std + mean."""

    mean: float
    std: float

    def standardise(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels - self.mean) / self.std

    def to_label_scale(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs * self.std + self.mean


IDENTITY = LabelScale(mean=0.0, std=1.0)


def fit_label_scale(labels: Sequence[float]) -> LabelScale:
    """Mean and (population) standard deviation of the training labels; std 1 if they are all equal."""
    values = np.asarray(labels, dtype=np.float64)
    std = float(values.std())
    return LabelScale(mean=float(values.mean()), std=std if std > 0 else 1.0)


def label_scale_of(config) -> LabelScale | None:
    """The statistics a checkpoint was trained with, or None for a model that outputs the label scale itself."""
    stored = getattr(config, CONFIG_KEY, None)
    return None if stored is None else LabelScale(**stored)


def set_label_scale(config, scale: LabelScale | None) -> None:
    """Store the statistics in the config (saved with config.json, copied by extraction); None removes them."""
    if scale is None:
        if hasattr(config, CONFIG_KEY):
            delattr(config, CONFIG_KEY)
    else:
        setattr(config, CONFIG_KEY, asdict(scale))


def standardised(batch: dict[str, torch.Tensor], scale: LabelScale | None) -> dict[str, torch.Tensor]:
    """The batch with its labels standardised (regression); unchanged without statistics."""
    if scale is None:
        return batch
    return batch | {"labels": scale.standardise(batch["labels"].float())}


def rescale(outputs: torch.Tensor, source: LabelScale | None, target: LabelScale | None) -> torch.Tensor:
    """Outputs of a model trained with `source` statistics, expressed in the scale of `target`."""
    labels = (source or IDENTITY).to_label_scale(outputs)
    return (target or IDENTITY).standardise(labels)


def label_scale_for_training(
    config, is_regression: bool, standardise: bool, train_labels: Sequence[float], inherited: bool
) -> LabelScale | None:
    """The statistics a run trains with, stored into `config`.

    Weights that were trained already (a resumed checkpoint, a teacher the run starts from) bring their
    own statistics, which are kept: never recomputed. Otherwise a regression task with standardisation
    on gets the training split's; classification and raw regression get none.
    """
    if inherited:
        scale = label_scale_of(config)
    elif is_regression and standardise:
        scale = fit_label_scale(train_labels)
    else:
        scale = None
    set_label_scale(config, scale)
    return scale
