"""Data-parallel super-network training: accelerate with two CPU processes (DDP over gloo), and DeepSpeed.

The distributed parts run in processes that `accelerate launch` or torchrun start; this file is also
their worker script: `python tests/test_accelerate.py WORKER ARGS...` (see WORKERS at the end).
Every model runs in eval mode where gradients are compared, so dropout does not differ between
processes and the single-process reference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny_batch, tiny_model
from tiny_assets import tiny_tokenizer, write_tiny_model_dir, write_tiny_sentiment
from tiny_runs import ToyRun, training_loss
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification

import train_supernet
from nas_llm.common.errors import UsageError
from nas_llm.model.models import save_supernet
from nas_llm.model.search_spaces import SearchSpace, make_search_space
from nas_llm.model.slicing import runner_for
from nas_llm.training.distributed import AcceleratedProcesses, check_deepspeed_support, gathered_parameters
from nas_llm.training.objective import SubNetworkRunner
from nas_llm.training.sampling import PlannedPass, make_sampling_strategy, training_step

PROJECT_DIR = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch() -> list[str]:
    """Two gloo processes on the CPU (`accelerate launch --cpu --num_processes 2` would start only one)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
    ]


def torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]


def run_workers(launcher: list[str], worker: str, *args) -> subprocess.CompletedProcess:
    command = [*launcher, str(Path(__file__).resolve()), worker, *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_DIR, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-8000:]
    return completed


def checksum(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def step_plans(search_space: SearchSpace) -> dict[str, list[PlannedPass]]:
    """Passes of one step: one_shot's; the same with the smallest sub-network last, so that the pass whose
    backward exchanges the gradients reaches only layer 0; sub-networks only, which leave layers 1 and 2
    without any gradient; and an ats sub-network step, whose teacher is a gradient-free full forward."""
    one_shot = make_sampling_strategy("one_shot", search_space, 2).plan(0, 1, np.random.default_rng(0))
    smallest = PlannedPass("smallest", search_space.smallest(), distill=False)
    return {
        "one_shot": one_shot,
        "smallest_last": [one_shot[0], *one_shot[2:], one_shot[1]],
        "sub_networks_only": [smallest, smallest],
        "ats_sub_networks": make_sampling_strategy("ats", search_space, 2).plan(0, 1, np.random.default_rng(0)),
    }


def single_process_gradients(
    model: nn.Module, batch: dict, passes: list[PlannedPass], run_as: SubNetworkRunner
) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    training_step(model, batch, passes, run_as, temperature=1.0)
    return {name: None if param.grad is None else param.grad.clone() for name, param in model.named_parameters()}


def gradient_difference(expected: dict, actual: dict) -> dict:
    """Largest absolute difference over the parameters, and whether the same parameters got no gradient."""
    without = sorted(name for name, grad in expected.items() if grad is None)
    return {
        "max_abs_diff": max(
            (actual[name] - grad).abs().max().item()
            for name, grad in expected.items()
            if grad is not None and actual[name] is not None
        ),
        "without_gradient": without,
        "same_without_gradient": without == sorted(name for name, grad in actual.items() if grad is None),
    }


# --- workers: run in each launched process -------------------------------------------------------------------


def train_worker(ranks_dir: str, *train_args: str) -> None:
    """train_supernet.main in this process; then record the launcher's rank and a checksum of the weights."""
    model = train_supernet.main(list(train_args))
    rank = int(os.environ["RANK"])
    record = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "checksum": checksum(model)}
    Path(ranks_dir).mkdir(parents=True, exist_ok=True)
    (Path(ranks_dir) / f"rank-{rank}.json").write_text(json.dumps(record))


def ddp_gradient_worker(output_dir: str) -> None:
    """One step of each plan through AcceleratedProcesses (DDP), against the single-process gradient."""
    runtime = AcceleratedProcesses(fp16=False, bf16=False, sub_network_execution="slice", resume=False)
    batch = tiny_batch(batch_size=8, seq_len=7, seed=1)
    rows = [{key: value[index] for key, value in batch.items()} for index in range(8)]
    model = tiny_model("bert")
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    model, optimizer, loader = runtime.prepare(model, optimizer, DataLoader(rows, batch_size=4))
    (shard,) = list(loader)  # rows 0-3 on rank 0, rows 4-7 on rank 1
    report = {"rank": runtime.accelerator.process_index, "type": type(model).__name__}
    for execution in ("slice", "mask"):
        run_as = runner_for(execution)
        for name, passes in step_plans(make_search_space("small", reference.config)).items():
            expected = single_process_gradients(reference, batch, passes, run_as)
            with runtime.accumulate_passes(model, len(passes)) as backward:
                training_step(model, shard, passes, runtime.sub_network_runner(run_as), 1.0, backward=backward)
            actual = {name: param.grad for name, param in runtime.unwrap(model).named_parameters()}
            report[f"{execution}/{name}"] = gradient_difference(expected, actual)
            optimizer.zero_grad(set_to_none=True)
    (Path(output_dir) / f"rank-{runtime.accelerator.process_index}.json").write_text(json.dumps(report))
    runtime.end()


def deepspeed_training_step(engine, batch: dict, passes: list[PlannedPass], run_as: SubNetworkRunner) -> None:
    """training_step through a DeepSpeed engine: the accumulation boundary (optimizer step) in the last pass."""
    passes_left = len(passes)

    def backward(loss: torch.Tensor) -> None:
        nonlocal passes_left
        passes_left -= 1
        engine.set_gradient_accumulation_boundary(passes_left == 0)
        engine.backward(loss)

    training_step(engine, batch, passes, lambda wrapped, sub: run_as(wrapped.module, sub), 1.0, backward=backward)


def deepspeed_worker(output_dir: str) -> None:
    """A step under DeepSpeed ZeRO-2 (sliced) and ZeRO-3 (masked), as accelerate's DeepSpeed engine wrapper
    drives it: the gradient-accumulation boundary (and the optimizer step) only in the last pass."""
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    deepspeed.init_distributed(dist_backend="gloo")
    rank = torch.distributed.get_rank()
    batch = tiny_batch(batch_size=8, seq_len=7, seed=1)
    shard = {key: value[4 * rank : 4 * rank + 4] for key, value in batch.items()}
    report = {}
    for stage, execution in ((2, "slice"), (3, "mask")):
        model = tiny_model("bert")
        reference = copy.deepcopy(model)
        run_as = runner_for(execution)
        passes = step_plans(make_search_space("small", model.config))["smallest_last"]
        expected = single_process_gradients(reference, batch, passes, run_as)
        config = {
            "train_micro_batch_size_per_gpu": 4,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 0.0,  # none, as in the reference; DeepSpeed's default turned from 0 to 1.0
            "zero_optimization": {"stage": stage},
            "zero_allow_untested_optimizer": True,  # accelerate sets it too for a torch optimizer
        }
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), config=config
        )
        deepspeed_training_step(engine, shard, passes, run_as)
        actual = {name: safe_get_full_grad(param) for name, param in engine.module.named_parameters()}
        report[f"zero{stage}/{execution}"] = gradient_difference(expected, actual)
        engine.step()
        if stage == 3:  # the partitioned weights, gathered and saved as train_supernet.py does
            with gathered_parameters(engine.module):
                if rank == 0:
                    save_supernet(engine.module, tiny_tokenizer(), Path(output_dir) / "zero3", {})
            if rank == 0:
                with torch.no_grad():
                    for param in reference.parameters():
                        param -= param.grad  # SGD, learning rate 1
                reference.save_pretrained(Path(output_dir) / "expected")
    (Path(output_dir) / f"rank-{rank}.json").write_text(json.dumps(report))
    # Both ranks have written their results; then leave without the interpreter's teardown, in which the
    # DeepSpeed engines' threads under gloo now and then abort ("terminate called without an active exception").
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


WORKERS = {"train": train_worker, "ddp_gradient": ddp_gradient_worker, "deepspeed": deepspeed_worker}


# --- tests -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("regression", [False, True], ids=["classification", "regression"])
def test_two_accelerate_processes_train_one_shot_in_sync_and_learn(tmp_path, regression):
    model_dir = write_tiny_model_dir(tmp_path / "model", "bert")
    train_file, test_file = write_tiny_sentiment(tmp_path / "data", regression=regression)
    output_dir, log_dir, ranks_dir = tmp_path / "supernet", tmp_path / "tb", tmp_path / "ranks"
    launched = run_workers(
        accelerate_launch(), "train", ranks_dir,
        "--model_name_or_path", model_dir, "--train_file", train_file, "--validation_file", test_file,
        "--output_dir", output_dir, "--log_dir", log_dir, "--sampling_strategy", "one_shot", "--search_space", "small",
        "--num_train_epochs", "6", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
        "--logging_steps", "1", "--seed", "0", "--fp16", "True", "--use_accelerate", "True",
    )
    assert "--fp16 needs a CUDA GPU; training in fp32 instead" in launched.stderr

    ranks = [json.loads((ranks_dir / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [(record["rank"], record["world_size"]) for record in ranks] == [(0, 2), (1, 2)]
    saved = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert ranks[0]["checksum"] == ranks[1]["checksum"] == checksum(saved), "the processes' weights diverged"
    initial = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert checksum(saved) != checksum(initial)
    run = ToyRun(model_dir, train_file, test_file, output_dir, log_dir, regression)
    assert training_loss(saved, run) < 0.8 * training_loss(initial, run)

    results = json.loads((output_dir / "results.json").read_text())
    # 210 training examples (70% of 300) in batches of 8: 27 batches, 14 per process and epoch
    assert results["num_processes"] == 2 and results["num_steps"] == 6 * 14
    assert (output_dir / "checkpoint-6" / "trainer_state.json").is_file()
    events = list((log_dir / "train-supernet").glob("events.out.tfevents.*"))
    assert len(events) == 1, "only the main process writes TensorBoard"


def test_ddp_gradient_of_a_step_equals_the_single_process_gradient(tmp_path):
    run_workers(accelerate_launch(), "ddp_gradient", tmp_path)
    layers_without_gradient = {
        f"bert.encoder.layer.{layer}.output.dense.weight" for layer in (1, 2)  # the smallest keeps layer 0
    }
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert report["rank"] == rank and report["type"] == "DistributedDataParallel"
        for execution in ("slice", "mask"):
            for plan in ("one_shot", "smallest_last", "sub_networks_only", "ats_sub_networks"):
                difference = report[f"{execution}/{plan}"]
                assert difference["max_abs_diff"] < TOLERANCE, (rank, execution, plan, difference)
                assert difference["same_without_gradient"], (rank, execution, plan)
            assert layers_without_gradient <= set(report[f"{execution}/sub_networks_only"]["without_gradient"])
            assert not report[f"{execution}/smallest_last"]["without_gradient"]


def test_default_config_is_the_original_deepspeed_zero3_setup():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(PROJECT_DIR / "default_config.yaml"))
    assert config.distributed_type == "DEEPSPEED" and config.num_processes == 4 and config.mixed_precision == "fp16"
    deepspeed_config = config.deepspeed_config
    assert deepspeed_config["zero_stage"] == 3 and deepspeed_config["zero3_save_16bit_model"]
    assert deepspeed_config["offload_optimizer_device"] == deepspeed_config["offload_param_device"] == "cpu"


def test_deepspeed_settings_that_cannot_train_correctly_are_refused():
    check_deepspeed_support(3, "mask", resume=False)
    check_deepspeed_support(2, "slice", resume=False)
    for stage in (0, 3):
        with pytest.raises(UsageError, match="--sub_network_execution mask"):
            check_deepspeed_support(stage, "slice", resume=False)
    with pytest.raises(UsageError, match="--resume_from_checkpoint is not supported with DeepSpeed"):
        check_deepspeed_support(2, "slice", resume=True)


def test_deepspeed_zero2_and_zero3_steps_equal_the_single_process_step(tmp_path):
    run_workers(torchrun(), "deepspeed", tmp_path)
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        for run in ("zero2/slice", "zero3/mask"):
            assert report[run]["max_abs_diff"] < TOLERANCE, (rank, run, report[run])
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "zero3").state_dict()
    expected = AutoModelForSequenceClassification.from_pretrained(tmp_path / "expected").state_dict()
    assert saved.keys() == expected.keys()
    assert all(torch.allclose(saved[name], expected[name], atol=TOLERANCE) for name in expected)


if __name__ == "__main__":
    WORKERS[sys.argv[1]](*sys.argv[2:])
