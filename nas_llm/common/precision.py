"""Device and mixed-precision choices, made once so the training loop stays device-agnostic."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from functools import partial

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    """The first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes in bf16 (AVX512-BF16 or AMX); without either, torch emulates it."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def warn_if_bf16_is_emulated(device: torch.device, bf16: bool) -> None:
    """bf16 on a CPU without native support runs, emulated, several times slower than fp32 (a MiniLM forward pass
    took 8.5 s against 1.1 s in fp32 on this project's AVX2 EPYC): say so, with what to do."""
    if bf16 and device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning("--bf16 True on a CPU without native bf16 (AVX512-BF16 or AMX; this one: %s): torch "
                       "emulates it, several times slower than fp32; drop --bf16 on this machine",
                       torch.backends.cpu.get_cpu_capability())


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
    warn_if_bf16_is_emulated(device, bf16)
    if bf16:
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return nullcontext


# Modules whose weights autocast casts to bf16 on every call (linear and addmm are on its lower-precision list)
MATRIX_MODULES = (nn.Linear, Conv1D)


def bf16_scoring(model: nn.Module, device: torch.device, bf16: bool) -> Callable[[], AbstractContextManager]:
    """A factory of contexts for forward passes without gradients (a search's scoring): bf16 autocast, with the
    weights of the matrix products cast once, here, instead of on every call. Autocast rounds a weight to bf16 as
    `.to(torch.bfloat16)` does, so the outputs are those of plain autocast; the cast copies cost half the matrix
    weights' memory, and outside the context (costs, latency) the model is fp32 as loaded."""
    if not bf16:
        return nullcontext
    autocast = autocast_for(device, False, bf16)
    copies = {(module, name): nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
              for module in model.modules() if isinstance(module, MATRIX_MODULES)
              for name, weight in module.named_parameters(recurse=False)}

    @contextmanager
    def scoring() -> Iterator[None]:
        with ExitStack() as stack:
            for (module, name), copy in copies.items():
                stack.callback(module._parameters.__setitem__, name, module._parameters[name])
                module._parameters[name] = copy
            stack.enter_context(autocast())
            yield
    return scoring


def gradient_scaler(device: torch.device, fp16: bool) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA; a disabled (pass-through) scaler otherwise."""
    return torch.amp.GradScaler(device.type, enabled=fp16 and device.type == "cuda")
