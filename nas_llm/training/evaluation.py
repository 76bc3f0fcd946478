"""Score the super-network or one of its sub-networks: one gradient-free pass over a data set.

Regression outputs are mapped back to the label scale with the statistics stored in the model's
config (label_scale.py), so reported predictions and metrics are those of the task's labels.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from nas_llm.data.data import LM_TASK
from nas_llm.data.metrics import metrics_with_error
from nas_llm.model.label_scale import IDENTITY, label_scale_of
from nas_llm.model.sub_network import SubNetwork
from nas_llm.training.language_modeling import evaluate_language_model
from nas_llm.training.objective import SubNetworkRunner


@torch.no_grad()
def predict(
    model: nn.Module,
    dataloader: DataLoader,
    device: torch.device,
    sub_network: SubNetwork | None = None,
    run_as: SubNetworkRunner | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels): class ids, or floats on the label scale for a single-output regression head."""
    scale = label_scale_of(model.config) or IDENTITY
    was_training = model.training
    model.eval()
    predictions, labels = [], []
    context = nullcontext() if sub_network is None else run_as(model, sub_network)
    with context:
        for batch in dataloader:
            batch = {key: value.to(device) for key, value in batch.items()}
            logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
            predictions.append(
                # float: under bf16 autocast the head's outputs are bf16, which numpy cannot take
                scale.to_label_scale(logits.squeeze(-1).float()) if logits.shape[-1] == 1 else logits.argmax(dim=-1)
            )
            labels.append(batch["labels"])
    model.train(was_training)
    return torch.cat(predictions).cpu().numpy(), torch.cat(labels).cpu().numpy()


def evaluate(
    model: nn.Module,
    dataloader: DataLoader,
    task_name: str,
    device: torch.device,
    sub_network: SubNetwork | None = None,
    run_as: SubNetworkRunner | None = None,
) -> dict[str, float]:
    """The task's metrics plus `error` (1 - main metric), the objective the search minimises.

    For language modelling (task 'lm'): loss, perplexity and error = loss / ln(vocabulary size).
    """
    if task_name == LM_TASK:
        return evaluate_language_model(model, dataloader, device, sub_network, run_as)
    predictions, labels = predict(model, dataloader, device, sub_network, run_as)
    return metrics_with_error(task_name, predictions, labels)
