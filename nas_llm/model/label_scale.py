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

A checkpoint shipped to users (extraction, RFP, recovery, standard-NAS trials: `extract.save_extracted`) must
mean the same loaded with plain transformers: `predicting_label_scale` folds the statistics into the head's last
linear layer while it is written (weight x std, bias x std + mean), and records them as `label_scale_folded` in
place of `label_scale`, so nothing rescales twice. The GPT-2, GPT-NeoX and Llama-family heads have no bias (their
transformers classes fix that), so there the outputs stay standardised and `config.json` and the model card say
how to map them. The project's loaders (`unfold_label_scale`) turn a folded checkpoint back into standardised
outputs with `label_scale`, what training, teachers and the mask search expect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from nas_llm.model.families import family_for

CONFIG_KEY = "label_scale"
FOLDED_KEY = "label_scale_folded"  # the statistics the head's last layer was multiplied out with
USAGE_KEY = "label_scale_usage"  # how to read the outputs of a head without a bias
USAGE = "outputs are standardised labels: prediction = logits[..., 0] * label_scale['std'] + label_scale['mean']"


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


def _regression_output(model: nn.Module) -> nn.Linear | None:
    """The last linear layer of a regression model's head; None where the model has no label statistics."""
    if label_scale_of(model.config) is None:
        return None
    return model.get_submodule(family_for(model).classifier_output)


@contextmanager
def predicting_label_scale(model: nn.Module) -> Iterator[None]:
    """While a checkpoint of `model` is written: outputs on the labels' scale for plain transformers.

    With a bias in the head's last layer the statistics are folded into it and the config records them as
    `label_scale_folded` instead of `label_scale`; without one the config gains `label_scale_usage`. The weights
    and the config are restored exactly afterwards (training or evaluation goes on standardised).
    """
    output = _regression_output(model)
    if output is None:
        yield
        return
    config = model.config
    if output.bias is None:
        setattr(config, USAGE_KEY, USAGE)
        try:
            yield
        finally:
            delattr(config, USAGE_KEY)
        return
    scale = label_scale_of(config)
    weight, bias = output.weight.detach().clone(), output.bias.detach().clone()
    try:
        with torch.no_grad():
            output.weight.mul_(scale.std)
            output.bias.mul_(scale.std).add_(scale.mean)
        set_label_scale(config, None)
        setattr(config, FOLDED_KEY, asdict(scale))
        yield
    finally:
        with torch.no_grad():
            output.weight.copy_(weight)
            output.bias.copy_(bias)
        if hasattr(config, FOLDED_KEY):
            delattr(config, FOLDED_KEY)
        set_label_scale(config, scale)


def unfold_label_scale(model: nn.Module) -> nn.Module:
    """A checkpoint written by `predicting_label_scale` back to standardised outputs and `label_scale`."""
    config = model.config
    folded = getattr(config, FOLDED_KEY, None)
    if folded is not None:
        scale = LabelScale(**folded)
        delattr(config, FOLDED_KEY)
        set_label_scale(config, scale)
        output = _regression_output(model)
        with torch.no_grad():
            output.bias.sub_(scale.mean).div_(scale.std)
            output.weight.div_(scale.std)
    if hasattr(config, USAGE_KEY):
        delattr(config, USAGE_KEY)
    return model
