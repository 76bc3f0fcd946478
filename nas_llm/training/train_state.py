"""Epoch checkpoints that a super-network training run resumes from exactly.

A checkpoint-<epoch>/ folder holds the model (save_pretrained: safetensors), the tokenizer, the NAS
settings, and the state of everything else a step depends on: optimizer, learning-rate schedule,
gradient scaler, the torch RNG (dropout), the data order generator and the sub-network sampler.
Restoring all of them makes a resumed run compute what an uninterrupted one would have.
Tensors are stored with torch.save and read back with `weights_only=True`; the rest is JSON.
A folder is written under a temporary name and renamed when complete, so a crash never leaves a
half-written checkpoint that looks valid.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nas_llm.common.errors import UsageError
from nas_llm.model.models import NAS_SETTINGS_FILE, save_supernet

STATE_FILE = "training_state.pt"
PROGRESS_FILE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingState:
    """Everything besides the weights that the next step depends on."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    data_order: torch.Generator
    sampling_rng: np.random.Generator


def save_checkpoint(
    directory: Path, model, tokenizer, nas_settings: dict, state: TrainingState, epoch: int, global_step: int,
    runtime_s: float,
) -> None:
    """Write checkpoint-<epoch>/ atomically (temporary folder, then rename); `runtime_s` is the training time so
    far, which a resumed run carries on from so that its results count every session."""
    temporary = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    save_supernet(model, tokenizer, temporary, nas_settings)
    torch.save(
        {
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "data_order": state.data_order.get_state(),
        },
        temporary / STATE_FILE,
    )
    progress = {"epoch": epoch, "global_step": global_step, "runtime_s": runtime_s,
                "sampling_rng": state.sampling_rng.bit_generator.state}
    (temporary / PROGRESS_FILE).write_text(json.dumps(progress))
    shutil.rmtree(directory, ignore_errors=True)
    temporary.rename(directory)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint-<epoch>/ with the highest epoch in `output_dir`, if any."""
    candidates = [
        path for path in Path(output_dir).glob("checkpoint-*")
        if _CHECKPOINT_NAME.match(path.name) and (path / PROGRESS_FILE).is_file()
    ]
    return max(candidates, key=lambda path: int(_CHECKPOINT_NAME.match(path.name).group(1)), default=None)


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> Path | None:
    """'latest' means the newest checkpoint in --output_dir (None if there is none yet: a fresh start)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from_checkpoint)
    if not (path / PROGRESS_FILE).is_file() or not (path / NAS_SETTINGS_FILE).is_file():
        raise UsageError(
            f"--resume_from_checkpoint {path} is not a training checkpoint (no {PROGRESS_FILE}); pass a "
            "checkpoint-<epoch> folder of --output_dir, or 'latest'"
        )
    return path


def restore_state(checkpoint: Path, state: TrainingState) -> tuple[int, int, float]:
    """Load optimizer, schedule, scaler and RNG states in place; returns (epoch, global_step, runtime_s) done."""
    saved = torch.load(checkpoint / STATE_FILE, weights_only=True)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state.data_order.set_state(saved["data_order"])
    progress = json.loads((checkpoint / PROGRESS_FILE).read_text())
    state.sampling_rng.bit_generator.state = progress["sampling_rng"]
    earlier_runtime_s = progress.get("runtime_s", 0.0)  # 0 for a checkpoint written before it was stored
    return progress["epoch"], progress["global_step"], earlier_runtime_s
