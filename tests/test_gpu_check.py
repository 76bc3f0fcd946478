"""bench/gpu_check.py on the CPU with tiny models: every part writes its fields, a failing part loses nothing else.

The script is meant for a rarely lent GPU, so everything but the GPU itself is checked here: a part that raises
is recorded as failed while the later parts still run (shown by replacing a part in `PARTS`, in-process), the
JSON file is rewritten after every part, and parts that would start after the deadline are skipped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gpu_check  # noqa: E402

from nas_llm.common.errors import UsageError  # noqa: E402

TINY = gpu_check.TINY


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, Path]:
    output = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    report = gpu_check.main(["--device", "cpu", "--tiny", "--output", str(output)])
    return report, output


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 0..n-1 (ties broken by order, none expected among measured times and distinct MAC counts)."""
    return np.argsort(np.argsort(values)).astype(float)


def test_the_json_file_holds_every_part_in_order(tiny_run):
    report, output = tiny_run
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    assert list(report["parts"]) == list(gpu_check.PARTS)
    assert report["device"] == "cpu" and report["machine"]["gpu"] is None


def test_training_part_times_one_shot_steps_per_precision(tiny_run):
    part = tiny_run[0]["parts"]["training"]
    assert part["status"] == "ok"
    for architecture in ("minilm", "bert-base"):
        runs = part["architectures"][architecture]
        assert runs["status"] == "ok", runs
        for precision in ("fp32", "bf16"):
            run = runs[precision]
            assert run["status"] == "ok", run
            assert run["timed_steps"] == TINY.timed_steps and run["warmup_steps"] == TINY.warmup_steps
            assert run["steps_per_s"] > 0 and run["median_step_ms"] > 0 and run["peak_memory_mb"] > 0
            assert set(run["last_step_losses"]) == {"largest", "smallest", "random"}  # one_shot's passes
            assert all(math.isfinite(loss) for loss in run["last_step_losses"].values())
        fp16 = runs["fp16"]
        assert fp16["status"] == "skipped" and "CUDA" in fp16["reason"]


def test_search_part_reports_throughput_per_mode_and_the_sliced_dense_ratio(tiny_run):
    part = tiny_run[0]["parts"]["search"]
    assert part["status"] == "ok" and part["num_configs"] == TINY.num_configs
    for architecture in ("minilm", "bert-base"):
        run = part["architectures"][architecture]
        assert run["status"] == "ok", run
        per_s = run["subnets_per_s"]
        assert set(per_s) == {"masked", "sliced", "dense", "unpruned"} and min(per_s.values()) > 0
        ratio = per_s["dense"] / per_s["sliced"]
        assert run["sliced_time_over_dense_time"] == pytest.approx(ratio)
        assert run["goal_holds"] == (ratio <= 1.1)
        assert run["peak_memory_mb"] > 0


def test_latency_part_reports_repeatability_and_rank_correlation_with_macs(tiny_run):
    part = tiny_run[0]["parts"]["latency"]
    assert part["status"] == "ok"
    assert list(part["batch_sizes"]) == [f"batch_{size}" for size in TINY.latency_batch_sizes]
    for run in part["batch_sizes"].values():
        medians = run["mid_size_latency_ms"]
        assert len(medians) == TINY.repeatability_runs and min(medians) > 0
        assert run["repeat_spread_pct"] == pytest.approx(100 * (max(medians) - min(medians)) / np.median(medians))
        latencies, macs = run["sub_network_latency_ms"], run["sub_network_macs"]
        assert len(latencies) == len(macs) == TINY.num_configs
        expected = np.corrcoef(ranks(latencies), ranks(macs))[0, 1]
        assert run["spearman_latency_macs"] == pytest.approx(expected)


def test_deepspeed_part_says_why_it_cannot_run_without_a_gpu(tiny_run):
    part = tiny_run[0]["parts"]["deepspeed"]
    assert part["status"] == "skipped" and "needs a CUDA GPU" in part["reason"]


def test_causal_lm_part_trains_a_step_and_searches_ten_sub_networks_in_bf16(tiny_run):
    part = tiny_run[0]["parts"]["causal_lm"]
    assert part["status"] == "ok"
    training, search = part["one_shot_bf16"], part["search_bf16"]
    assert training["status"] == "ok" and training["timed_steps"] == TINY.lm_timed_steps
    assert all(math.isfinite(loss) for loss in training["last_step_losses"].values())
    assert search["status"] == "ok", search
    assert search["num_evaluations"] == TINY.lm_num_samples == 10
    assert 1 <= search["pareto_size"] <= 10 and search["device"] == "cpu" and search["peak_memory_mb"] > 0


def test_the_table_names_every_part_and_its_status(tiny_run, capsys):
    gpu_check.print_table(tiny_run[0])
    lines = capsys.readouterr().out.splitlines()
    for name, result in tiny_run[0]["parts"].items():
        assert any(line.startswith(name) and result["status"] in line for line in lines), name


def test_a_part_that_raises_is_recorded_as_failed_and_the_later_parts_still_run(tmp_path, monkeypatch):
    output = tmp_path / "gpu_check.json"
    seen_in_file = {}

    def broken_search(context):
        seen_in_file.update(json.loads(output.read_text())["parts"])  # what the run had written before this part
        raise RuntimeError("out of memory, say")

    monkeypatch.setitem(gpu_check.PARTS, "search", gpu_check.Part(broken_search, 0.1))
    gpu_check.main(["--device", "cpu", "--tiny", "--output", str(output), "--parts", "deepspeed", "search", "latency"])
    parts = json.loads(output.read_text())["parts"]
    assert seen_in_file["deepspeed"]["status"] == "skipped" and seen_in_file["search"] == {"status": "pending"}
    assert parts["search"]["status"] == "failed"
    assert parts["search"]["error"] == "RuntimeError: out of memory, say"
    assert "broken_search" in parts["search"]["traceback"]
    assert parts["latency"]["status"] == "ok" and len(parts["latency"]["batch_sizes"]) == len(TINY.latency_batch_sizes)


def test_parts_that_would_start_after_the_deadline_are_skipped(tmp_path):
    output = tmp_path / "gpu_check.json"
    gpu_check.main(["--device", "cpu", "--tiny", "--output", str(output), "--max_minutes", "0"])
    parts = json.loads(output.read_text())["parts"]
    assert list(parts) == list(gpu_check.PARTS)
    for result in parts.values():
        assert result == {"status": "skipped", "reason": "the run's time limit (0.0 min) was reached"}


def test_steps_stop_at_the_time_box_but_not_before_the_minimum():
    batches = [{"input_ids": torch.tensor([index])} for index in range(3)]
    expired = gpu_check.TimeBox(time.monotonic() - 1)
    assert len(list(gpu_check.batches_until(batches, 10, 2, expired))) == 2
    open_box = gpu_check.TimeBox(time.monotonic() + 600)
    taken = list(gpu_check.batches_until(batches, 5, 2, open_box))
    assert [int(batch["input_ids"]) for batch in taken] == [0, 1, 2, 0, 1]


def test_deepspeed_runs_default_config_with_zero2_on_one_process():
    default = yaml.safe_load((Path(__file__).resolve().parents[1] / "default_config.yaml").read_text())
    config = gpu_check.deepspeed_launch_config()
    assert config["deepspeed_config"].pop("zero_stage") == 2 and default["deepspeed_config"].pop("zero_stage") == 3
    assert config.pop("num_processes") == 1 and default.pop("num_processes") == 4
    assert config == default  # fp16, CPU offload, gradient clipping 1.0: the rest as the original ships it


def test_asking_for_cuda_without_a_gpu_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="--device cuda: torch sees no CUDA GPU here; pass --device cpu"):
        gpu_check.main(["--device", "cuda", "--output", str(tmp_path / "gpu_check.json")])
    assert not (tmp_path / "gpu_check.json").exists()
