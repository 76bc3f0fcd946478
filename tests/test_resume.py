"""Long jobs lose no work: a search killed mid-run resumes to the same results."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_runs import train

from nas_llm.common.errors import UsageError

PROJECT_DIR = Path(__file__).resolve().parents[1]


def search_command(model_dir, data_dir, checkpoint, output_dir, num_samples=40, strategy="local_search", seed=1):
    return [
        sys.executable, str(PROJECT_DIR / "run_offline_search.py"),
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--checkpoint_dir_model", str(checkpoint), "--search_space", "medium", "--search_strategy", strategy,
        "--num_samples", str(num_samples), "--output_dir", str(output_dir), "--seed", str(seed),
        "--log_dir", str(output_dir / "tb"), "--cost_seq_len", "16", "--latency_repeats", "1",
    ]


def comparable(results: dict) -> dict:
    """What must not depend on an interruption: configs, errors, costs and the Pareto set."""
    return {
        "evaluations": [(e["config"], e["error"], e["params"]) for e in results["evaluations"]],
        "pareto_indices": results["pareto_indices"],
        "pareto_test": [(p["iteration"], p["test"], p["sub_network"]) for p in results["pareto_set"]],
    }


def run(command, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_DIR, env=env, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train(tmp_path_factory.mktemp("resume"), "bert", space="medium")


def test_search_killed_mid_run_resumes_to_the_uninterrupted_results(tmp_path, trained):
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    assert run(search_command(*trained, reference_dir)).returncode == 0
    log = resumed_dir / "evaluations.jsonl"
    process = subprocess.Popen(
        search_command(*trained, resumed_dir), cwd=PROJECT_DIR, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 8):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    logged_before_kill = len(logged)
    assert 8 <= logged_before_kill < 40, "the search must be killed in the middle"
    assert not (resumed_dir / "results_rte.json").exists()
    # Pretend the interrupted session ran for 1000 s: the resumed run's runtime must count it.
    logged[-1]["runtime_s"] = 1000.0
    log.write_text("".join(json.dumps(record) + "\n" for record in logged))

    started = time.time()
    resumed = run(search_command(*trained, resumed_dir))
    resumed_wall_clock = time.time() - started
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed {logged_before_kill} evaluations" in resumed.stderr
    reference = json.loads((reference_dir / "results_rte.json").read_text())
    result = json.loads((resumed_dir / "results_rte.json").read_text())
    assert comparable(result) == comparable(reference)
    assert 1000.0 < result["runtime_s"] < 1000.0 + resumed_wall_clock
    assert 1000.0 < result["evaluations"][logged_before_kill]["runtime_s"] < result["runtime_s"]


def test_resume_into_a_run_with_other_settings_is_refused(tmp_path, trained):
    output_dir = tmp_path / "run"
    assert run(search_command(*trained, output_dir, num_samples=3)).returncode == 0
    refused = run(search_command(*trained, output_dir, num_samples=3, seed=2))
    assert refused.returncode == 2
    assert "holds a run with --seed 1 (this run: 2)" in refused.stderr
    assert "Traceback" not in refused.stderr
    fresh = run(search_command(*trained, output_dir, num_samples=3, seed=2) + ["--overwrite_output_dir", "True"])
    assert fresh.returncode == 0, fresh.stderr


def train_command(model_dir, data_dir, output_dir, resume=False, group_by_length=False):
    return [
        sys.executable, str(PROJECT_DIR / "train_supernet.py"),
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(output_dir), "--log_dir", str(output_dir / "tb"), "--sampling_strategy", "kd",
        "--sampling_distribution", "params", "--search_space", "medium", "--num_train_epochs", "3",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--seed", "0",
        *(["--resume_from_checkpoint", "latest"] if resume else []),
        *(["--group_by_length", "True"] if group_by_length else []),
    ]


@pytest.mark.parametrize("group_by_length", [False, True])
def test_training_killed_after_an_epoch_resumes_to_the_uninterrupted_weights(tmp_path, group_by_length):
    from safetensors.torch import load_file
    from tiny_assets import write_tiny_model_dir, write_tiny_rte

    model_dir = write_tiny_model_dir(tmp_path / "model", "bert")
    data_dir = write_tiny_rte(tmp_path / "glue", num_train=400)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    finished = run(train_command(model_dir, data_dir, reference, group_by_length=group_by_length))
    assert finished.returncode == 0, finished.stderr

    process = subprocess.Popen(
        train_command(model_dir, data_dir, resumed, group_by_length=group_by_length), cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (resumed / "checkpoint-1" / "trainer_state.json").is_file():
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "checkpoint-3").exists(), "training must be killed before it ends"

    again = run(train_command(model_dir, data_dir, resumed, resume=True, group_by_length=group_by_length))
    assert again.returncode == 0, again.stderr
    assert "Resuming from" in again.stderr
    expected, actual = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_resuming_training_with_other_settings_is_refused(tmp_path):
    from tiny_assets import write_tiny_model_dir, write_tiny_rte

    model_dir = write_tiny_model_dir(tmp_path / "model", "bert")
    data_dir = write_tiny_rte(tmp_path / "glue")
    output_dir = tmp_path / "run"
    assert run(train_command(model_dir, data_dir, output_dir)).returncode == 0
    other = train_command(model_dir, data_dir, output_dir, resume=True)
    other[other.index("kd")] = "sandwich"
    refused = run(other)
    assert refused.returncode == 2 and "--sampling_strategy kd but this run asks for --sampling_strategy sandwich" in (
        refused.stderr
    )
    other = train_command(model_dir, data_dir, output_dir, resume=True)
    other[other.index("params")] = "uniform"
    refused = run(other)
    assert refused.returncode == 2 and "--sampling_distribution params but this run asks for --sampling_distribution " \
        "uniform" in refused.stderr
    refused = run(train_command(model_dir, data_dir, output_dir, resume=True, group_by_length=True))
    assert refused.returncode == 2 and "--group_by_length False but this run asks for --group_by_length True" in (
        refused.stderr
    )


def test_ats_resumed_after_an_odd_number_of_steps_keeps_alternating(tmp_path):
    """3 steps per epoch: epoch 2 starts at step 3, a full-network step. A run resumed from checkpoint-1 that
    counted its steps from 0 again would start epoch 2 with sub-networks and end with other weights. Its
    runtime counts the interrupted session's training too."""
    import shutil

    from safetensors.torch import load_file
    from tiny_assets import write_tiny_model_dir, write_tiny_rte

    import train_supernet

    model_dir = write_tiny_model_dir(tmp_path / "model", "bert")
    data_dir = write_tiny_rte(tmp_path / "glue")  # 28 training examples: batches of 10, 10 and 8

    def train_ats(output_dir, *extra):
        train_supernet.main([
            "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
            "--output_dir", str(output_dir), "--log_dir", str(output_dir / "tb"), "--sampling_strategy", "ats",
            "--num_train_epochs", "2", "--per_device_train_batch_size", "10", "--learning_rate", "1e-3",
            "--save_strategy", "epoch", "--seed", "0", "--sampling_distribution", "params",
            "--distill_hidden_states", "True", *extra,
        ])

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    train_ats(reference)
    assert json.loads((reference / "checkpoint-1" / "trainer_state.json").read_text())["global_step"] == 3
    shutil.copytree(reference / "checkpoint-1", resumed / "checkpoint-1")  # as if killed after epoch 1
    # Pretend the interrupted session trained for 1000 s: the resumed run's runtime must count it.
    progress_file = resumed / "checkpoint-1" / "trainer_state.json"
    progress = json.loads(progress_file.read_text())
    assert 0 < progress["runtime_s"] < json.loads((reference / "results.json").read_text())["runtime_s"]
    progress_file.write_text(json.dumps(progress | {"runtime_s": 1000.0}))
    started = time.time()
    train_ats(resumed, "--resume_from_checkpoint", "latest")
    resumed_wall_clock = time.time() - started
    results = json.loads((resumed / "results.json").read_text())
    assert results["num_steps"] == 6
    assert 1000.0 < results["runtime_s"] < 1000.0 + resumed_wall_clock
    expected, actual = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_a_checkpoint_from_before_group_by_length_resumes_as_ungrouped(tmp_path):
    from nas_llm.training.supernet import check_same_settings

    settings_before_the_flag = {"seed": 0, "sampling_strategy": "kd"}
    check_same_settings(settings_before_the_flag, {"seed": 0, "group_by_length": False}, tmp_path)
    with pytest.raises(UsageError, match="--group_by_length False but this run asks for --group_by_length True"):
        check_same_settings(settings_before_the_flag, {"seed": 0, "group_by_length": True}, tmp_path)
