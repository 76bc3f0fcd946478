"""Where the super-network training loop runs: one process, or several through accelerate (DDP, DeepSpeed).

train_supernet.py has one training loop. What differs between the two ways to run it is a method
here: `SingleProcess` is the plain PyTorch implementation (device, torch autocast, GradScaler),
`AcceleratedProcesses` delegates to `accelerate.Accelerator` (`--use_accelerate True`, started
with `accelerate launch`, see the README).

The one subtle part is a training step that accumulates several passes (full network, smallest and
random sub-networks) into one optimizer step, under data parallelism:

- Gradients are exchanged once per step, in the last pass: the earlier passes run under
  `accelerator.no_sync` (DDP) and with `sync_gradients` off (DeepSpeed, whose engine steps the
  optimizer in the backward of a gradient-accumulation boundary).
- A sub-network pass does not reach every parameter (dropped layers, sliced-away heads and neurons),
  and neither does the last pass of a step in general. DDP therefore runs with
  `find_unused_parameters=True`: it then also reduces the gradients that only the no_sync passes
  produced, and leaves a gradient that no pass produced as None, on every rank (all ranks plan the
  same sub-networks: they share the sampling seed). tests/test_accelerate.py checks that the
  gradient of a step equals the single-process gradient over the concatenated batch.
- `slicing.sliced` swaps the parameters of the model *inside* the DDP/DeepSpeed wrapper for sliced
  views, so the runner is applied to the unwrapped model while the forward goes through the
  wrapper. The views are differentiable, so the gradients reach the original parameters, which
  DDP's reducer (ZeRO-1/2's optimizer) owns. DeepSpeed ZeRO-3 partitions each parameter (slicing
  needs whole tensors) and ZeRO-0 reduces the module's parameters as they are at the end of the
  backward (inside the sliced context: the sub-network's views), so with those two stages
  sub-networks must run masked (`--sub_network_execution mask`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn
from torch.utils.data import DataLoader

from nas_llm.common.errors import UsageError
from nas_llm.common.precision import autocast_for, default_device, gradient_scaler, warn_if_bf16_is_emulated
from nas_llm.training.objective import SubNetworkRunner

logger = logging.getLogger(__name__)

Backward = Callable[[torch.Tensor], None]


def gathered_parameters(model: nn.Module) -> AbstractContextManager:
    """Whole parameters, for saving and counting them: ZeRO-3 keeps one shard of each on each process.

    DeepSpeed marks its partitioned parameters with `ds_id`; gathering them is collective (every
    process must enter the context). A no-op for a model that is not partitioned.
    """
    partitioned = [param for param in model.parameters() if hasattr(param, "ds_id")]
    if not partitioned:
        return nullcontext()
    import deepspeed  # only reachable when DeepSpeed partitioned the model

    return deepspeed.zero.GatheredParameters(partitioned)


class SingleProcess:
    """Plain PyTorch on `device` (`default_device()` if None): torch autocast and a GradScaler from --fp16/--bf16."""

    is_main_process = True
    num_processes = 1
    saves_training_state = True

    def __init__(self, fp16: bool, bf16: bool, device: torch.device | None = None):
        self.device = device or default_device()
        self.autocast = autocast_for(self.device, fp16, bf16)
        self.scaler = gradient_scaler(self.device, fp16)

    def main_process_first(self) -> AbstractContextManager:
        return nullcontext()

    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader
    ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        return model, optimizer, train_loader

    def prepare_scheduler(self, scheduler: torch.optim.lr_scheduler.LRScheduler):
        return scheduler

    def sub_network_runner(self, run_as: SubNetworkRunner) -> SubNetworkRunner:
        return run_as

    @contextmanager
    def accumulate_passes(self, model: nn.Module, num_passes: int) -> Iterator[Backward]:
        """The backward of each pass of one step; gradients accumulate in the parameters."""
        yield lambda loss: self.scaler.scale(loss).backward()

    def clip_grad_norm_(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)
        self.scaler.update()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass

    def end(self) -> None:
        pass


def accelerate_mixed_precision(fp16: bool, bf16: bool) -> str | None:
    """accelerate's `mixed_precision` for --fp16/--bf16, or None to keep the launcher's config.

    --fp16 without a CUDA GPU falls back to fp32 with a warning, as in the single-process path
    (accelerate would silently ignore fp16 on a CPU).
    """
    if fp16 and default_device().type != "cuda":
        logger.warning("--fp16 needs a CUDA GPU; training in fp32 instead (try --bf16 on CPUs)")
        return "no"
    if fp16:
        return "fp16"
    warn_if_bf16_is_emulated(default_device(), bf16)
    return "bf16" if bf16 else None


class AcceleratedProcesses:
    """`accelerate.Accelerator` in every process that `accelerate launch` (or torchrun) started."""

    def __init__(self, fp16: bool, bf16: bool, sub_network_execution: str, resume: bool):
        self.accelerator = Accelerator(
            mixed_precision=accelerate_mixed_precision(fp16, bf16),
            # One schedule step per optimizer step, as in the single-process loop (the schedule is
            # built from the length of this process's shard of the data).
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.device = self.accelerator.device
        self.is_main_process = self.accelerator.is_main_process
        self.num_processes = self.accelerator.num_processes
        self.autocast = self.accelerator.autocast
        self.scaler = self.accelerator.scaler or torch.amp.GradScaler(self.device.type, enabled=False)
        deepspeed_plugin = self.accelerator.state.deepspeed_plugin
        # DeepSpeed partitions the optimizer state over the processes: a checkpoint of it from the
        # main process alone could not be resumed from.
        self.saves_training_state = deepspeed_plugin is None
        if deepspeed_plugin is not None:
            check_deepspeed_support(deepspeed_plugin.zero_stage, sub_network_execution, resume)

    def main_process_first(self) -> AbstractContextManager:
        """Download and cache data once: the main process first, then the others read its cache."""
        return self.accelerator.main_process_first()

    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader
    ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        """Wrap the model (DDP or DeepSpeed engine) and the optimizer; shard the training data."""
        return self.accelerator.prepare(model, optimizer, train_loader)

    def prepare_scheduler(self, scheduler: torch.optim.lr_scheduler.LRScheduler):
        return self.accelerator.prepare(scheduler)

    def sub_network_runner(self, run_as: SubNetworkRunner) -> SubNetworkRunner:
        """`run_as` on the model inside the wrapper; the forward still goes through the wrapper."""
        return lambda model, sub_network: run_as(self.accelerator.unwrap_model(model), sub_network)

    @contextmanager
    def accumulate_passes(self, model: nn.Module, num_passes: int) -> Iterator[Backward]:
        """The backward of each pass of one step; gradients are exchanged in the last pass only.

        The earlier passes' forwards and backwards run under no_sync; the backward of the second to
        last pass leaves it, so the last forward prepares DDP's gradient reduction.
        """
        passes_left = num_passes
        with ExitStack() as unsynced:
            if num_passes > 1:
                unsynced.enter_context(self.accelerator.no_sync(model))
                self.accelerator.sync_gradients = False
                unsynced.callback(setattr, self.accelerator, "sync_gradients", True)

            def backward(loss: torch.Tensor) -> None:
                nonlocal passes_left
                self.accelerator.backward(loss)
                passes_left -= 1
                if passes_left == 1:
                    unsynced.close()

            yield backward

    def clip_grad_norm_(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        """Unscales fp16 gradients first; under DeepSpeed the engine clips (the config's gradient_clipping)."""
        self.accelerator.clip_grad_norm_(model.parameters(), max_norm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def end(self) -> None:
        self.accelerator.wait_for_everyone()  # no rank tears the process group down while another still uses it
        self.accelerator.end_training()


def check_deepspeed_support(zero_stage: int, sub_network_execution: str, resume: bool) -> None:
    """Refuse the DeepSpeed settings this training cannot run correctly (see the module docstring)."""
    if zero_stage in (0, 3) and sub_network_execution == "slice":
        raise UsageError(
            f"DeepSpeed ZeRO stage {zero_stage} cannot train sliced sub-networks (ZeRO-3 partitions the weights, "
            "ZeRO-0 would reduce the sliced views); pass --sub_network_execution mask or use ZeRO stage 1 or 2"
        )
    if resume:
        raise UsageError(
            "--resume_from_checkpoint is not supported with DeepSpeed: its optimizer state is partitioned over "
            "the processes, so the epoch checkpoints hold the weights only"
        )


def make_runtime(use_accelerate: bool, fp16: bool, bf16: bool, sub_network_execution: str, resume: bool):
    """`AcceleratedProcesses` for --use_accelerate True, else `SingleProcess`."""
    if use_accelerate:
        return AcceleratedProcesses(fp16, bf16, sub_network_execution, resume)
    return SingleProcess(fp16, bf16)


def report_from_main_process_only(is_main_process: bool) -> None:
    """Progress is logged by the main process; the others log warnings and errors only."""
    if is_main_process:
        return
    logging.getLogger().setLevel(logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
