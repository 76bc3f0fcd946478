"""Store every layer's head units and FFN neurons most important first (`--reorder_units importance`).

Prefix search spaces (small, smallpower2, medium) keep the first k heads and neurons of a layer;
after reordering those are the k most important ones (DynaBERT's network rewiring, Kwon et al.
2022's mask rearrangement). A permutation is the same index operation as a slice: `unit_index`
with all units in the new order, applied to every parameter on a head or neuron axis. Units
compute independently of their position, so the full network's function is unchanged; the
permutation lives in the weights and travels with every checkpoint. The `large` space keeps any
subset and is unaffected, `layer` keeps whole blocks; the `importance` space ranks the stored units by their scores
(`unit_scores`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from nas_llm.common.io_utils import write_json_atomic
from nas_llm.model.families import ParamAxis, family_for, layer_parameters, layers_of
from nas_llm.model.sub_network import unit_index
from nas_llm.model.unit_ranking import UnitScores
from nas_llm.training.importance import UnitImportance, unit_importance
from nas_llm.training.objective import CLASSIFICATION, TrainingObjective

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

logger = logging.getLogger(__name__)

IMPORTANCE_FILE = "unit_importance.json"


@torch.no_grad()
def permute_units(model: nn.Module, head_order: torch.Tensor, neuron_order: torch.Tensor) -> None:
    """Rewrite the weights so that layer l stores head unit `head_order[l][k]` k-th (neurons likewise), in place."""
    family = family_for(model)
    for index, layer in enumerate(layers_of(model)):
        for param, tensor in layer_parameters(model, layer):
            if param.axis in (ParamAxis.ATTENTION_BLOCK, ParamAxis.FFN_BLOCK):
                continue
            units = neuron_order[index] if param.axis is ParamAxis.NEURON else head_order[index]
            positions = unit_index(family, model.config, units, param.axis).to(tensor.device)
            tensor.copy_(tensor.index_select(param.dim, positions))


def reorder_by_importance(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], objective: TrainingObjective = CLASSIFICATION
) -> UnitImportance:
    """Score every unit on `batches`, then permute the weights most important first; returns the scores."""
    start = time.time()
    importance = unit_importance(model, batches, objective)
    permute_units(model, importance.head_order(), importance.neuron_order())
    logger.info(
        "Stored every layer's head units and neurons most important first (Fisher scores on %d batches, %.1f s)",
        importance.num_batches, time.time() - start,
    )
    return importance


def report_importance(importance: UnitImportance, output_dir: str | Path, writer: SummaryWriter | None) -> None:
    """Write `unit_importance.json` next to the checkpoint and log per-layer histograms to TensorBoard."""
    write_json_atomic(Path(output_dir) / IMPORTANCE_FILE, importance.to_json_dict())
    if writer is not None:
        for layer, (heads, neurons) in enumerate(zip(importance.heads, importance.neurons, strict=True)):
            writer.add_histogram(f"importance/heads/layer_{layer}", heads, 0)
            writer.add_histogram(f"importance/neurons/layer_{layer}", neurons, 0)


def unit_scores(importance: UnitImportance | None, directory: str | Path) -> UnitScores | None:
    """The units' scores in the order the reordered weights store them: this run's (`importance`), else those a
    reordered checkpoint in `directory` recorded (a resumed run, a search); None for a model never reordered."""
    if importance is None:
        path = Path(directory) / IMPORTANCE_FILE
        if not path.is_file():
            return None
        importance = UnitImportance.from_json_dict(json.loads(path.read_text()))
    return UnitScores(importance.heads.gather(1, importance.head_order()),
                      importance.neurons.gather(1, importance.neuron_order()))
