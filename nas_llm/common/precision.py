"""Device and mixed-precision choices, made once so the training loop stays device-agnostic."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    """The first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device, fp16: bool, bf16: bool) -> Callable[[], AbstractContextManager]:
    """A factory of autocast contexts for the forward passes.

    --fp16 needs a CUDA GPU (torch's CPU autocast has no fp16 training support): without one the
    run falls back to fp32 with a warning, so the original README command also works on a laptop.
    """
    if fp16 and device.type != "cuda":
        logger.warning("--fp16 needs a CUDA GPU; training in fp32 on %s instead (try --bf16 on CPUs)", device)
        return nullcontext
    if fp16:
        return partial(torch.autocast, device_type="cuda", dtype=torch.float16)
    if bf16:
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return nullcontext


def gradient_scaler(device: torch.device, fp16: bool) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA; a disabled (pass-through) scaler otherwise."""
    return torch.amp.GradScaler(device.type, enabled=fp16 and device.type == "cuda")
