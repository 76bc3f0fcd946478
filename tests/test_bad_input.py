"""Bad input: one actionable line on stderr, exit code 2, no traceback, nothing written."""

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from support import tiny_config
from tiny_assets import write_tiny_model_dir
from transformers import AutoModel, AutoModelForSequenceClassification

import launch_all_offline_search
import launch_all_supernet_training
import launch_offline_search
import launch_standard_nas
import launch_supernet_training
import plot_pareto
import run_offline_search
import run_standard_nas
import select_and_extract
import train_supernet
from nas_llm.common.errors import exit_on_usage_error

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_search_memory  # noqa: E402
import bench_sub_networks  # noqa: E402
import gpu_check  # noqa: E402
import importance_orders  # noqa: E402
import make_tiny_lm  # noqa: E402
import prefix_sub_networks  # noqa: E402
import study_glue  # noqa: E402


@pytest.fixture(scope="module")
def assets(tmp_path_factory, trained_bert):
    """A trained tiny super-network (small space), its pre-trained model and data, and bad user files."""
    root = tmp_path_factory.mktemp("bad_input")
    model_dir, data_dir, checkpoint = trained_bert
    (root / "no_label.csv").write_text("sentence\nthe cat\na dog\n")
    (root / "no_text.csv").write_text("text,label\nthe cat,1\na dog,0\n")
    (root / "empty.csv").write_text("sentence,label\n")
    (root / "imdb_no_test" / "imdb").mkdir(parents=True)
    (root / "imdb_no_test" / "imdb" / "train.csv").write_text("text,label\nGreat.,1\nDull.,0\n")
    (root / "imdb_columns" / "imdb").mkdir(parents=True)
    for split in ("train", "test"):
        (root / "imdb_columns" / "imdb" / f"{split}.csv").write_text("review,sentiment\nGreat.,pos\nDull.,neg\n")
    (root / "t5").mkdir()
    (root / "t5" / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 10}))
    write_tiny_model_dir(root / "plain_model", "bert")
    write_tiny_model_dir(root / "gpt2_teacher", "gpt2")
    write_tiny_model_dir(root / "three_label_teacher", "bert", num_labels=3)
    wider = tiny_config("bert")
    wider.intermediate_size = 24
    AutoModelForSequenceClassification.from_config(wider).save_pretrained(root / "wider_teacher")
    AutoModel.from_config(tiny_config("bert")).save_pretrained(root / "headless_teacher")
    shutil.copytree(checkpoint, root / "mrpc_teacher")
    settings = json.loads((checkpoint / "nas_settings.json").read_text()) | {"task_name": "mrpc"}
    (root / "mrpc_teacher" / "nas_settings.json").write_text(json.dumps(settings))
    return {"root": root, "model": str(model_dir), "data": str(data_dir), "checkpoint": str(checkpoint)}


def train_argv(assets, *extra):
    return [
        "--model_name_or_path", assets["model"], "--task_name", "rte", "--data_dir", assets["data"],
        "--output_dir", str(assets["root"] / "never_written"), "--num_train_epochs", "1", *extra,
    ]


def search_argv(assets, *extra):
    return [
        "--model_name_or_path", assets["model"], "--task_name", "rte", "--data_dir", assets["data"],
        "--checkpoint_dir_model", assets["checkpoint"], "--num_samples", "2",
        "--output_dir", str(assets["root"] / "never_written"), *extra,
    ]


def teacher_argv(assets, teacher, *extra):
    return train_argv(assets, "--teacher_model_name_or_path", str(assets["root"] / teacher), *extra)


def user_file_argv(assets, name):
    return ["--model_name_or_path", assets["model"], "--train_file", str(assets["root"] / name),
            "--output_dir", str(assets["root"] / "never_written")]


def imdb_argv(assets, data_dir):
    return train_argv(assets)[:2] + ["--task_name", "imdb", "--data_dir", str(assets["root"] / data_dir),
                                     "--output_dir", str(assets["root"] / "never_written")]


CASES = [
    ("train", lambda a: train_argv(a)[:2] + ["--task_name", "yelp"], "unknown --task_name|Unknown --task_name 'yelp'"),
    ("train", lambda a: train_argv(a, "--search_space", "huge"), "unknown --search_space 'huge'; choose one of: small"),
    ("train", lambda a: train_argv(a, "--sampling_strategy", "oneshot"), "unknown --sampling_strategy 'oneshot'"),
    ("train", lambda a: train_argv(a, "--num_random_sub_nets", "0"), "--num_random_sub_nets must be positive"),
    ("train", lambda a: train_argv(a, "--sampling_distribution", "flops"), "unknown --sampling_distribution 'flops'"),
    ("train", lambda a: train_argv(a, "--sampling_strategy", "standard", "--sampling_distribution", "params"),
     "--sampling_strategy standard never draws"),
    ("train", lambda a: train_argv(a, "--learning_rate", "-1"), "--learning_rate must be positive"),
    ("train", lambda a: train_argv(a, "--lr_scheduler_type", "warp"), "unknown --lr_scheduler_type 'warp'"),
    ("train", lambda a: train_argv(a, "--save_strategy", "steps"), "unknown --save_strategy 'steps'"),
    ("train", lambda a: train_argv(a, "--fp16", "True", "--bf16", "True"), "choose one of --fp16 and --bf16"),
    ("train", lambda a: train_argv(a, "--validation_fraction", "1.5"), "strictly between 0 and 1"),
    ("train", lambda a: train_argv(a)[:4] + ["--data_dir", "/no/such/glue"], "not a directory"),
    ("train", lambda a: user_file_argv(a, "missing.csv"), "does not exist"),
    ("train", lambda a: user_file_argv(a, "no_label.csv"), "label"),
    ("train", lambda a: user_file_argv(a, "no_text.csv"), "sentence"),
    ("train", lambda a: user_file_argv(a, "empty.csv"), "no data rows"),
    ("train", lambda a: imdb_argv(a, "imdb_no_test"), "imdb has no test file; add test.csv, .jsonl or .parquet"),
    ("train", lambda a: imdb_argv(a, "imdb_columns"), "has no column(s) ['text', 'label'] (found: ['review'"),
    ("train", lambda a: ["--model_name_or_path", str(a["root"] / "t5")] + train_argv(a)[2:], "'t5' is not supported"),
    ("train", lambda a: ["--model_name_or_path", "org/uncached"] + train_argv(a)[2:], "local model directory"),
    ("train", lambda a: train_argv(a, "--resume_from_checkpoint", "/no/ckpt"), "not a training checkpoint"),
    ("train", lambda a: teacher_argv(a, "gpt2_teacher"), "is a GPT2ForSequenceClassification but the model is a Bert"),
    ("train", lambda a: teacher_argv(a, "wider_teacher"), "has another shape than the model"),
    ("train", lambda a: teacher_argv(a, "three_label_teacher"), "has 3 output(s) but the task has 2"),
    ("train", lambda a: teacher_argv(a, "mrpc_teacher"), "was trained on --task_name mrpc, this run is on rte"),
    ("train", lambda a: teacher_argv(a, "headless_teacher"), "is not fine-tuned"),
    ("train", lambda a: teacher_argv(a, "plain_model", "--sampling_strategy", "sandwich"),
     "--teacher_model_name_or_path needs a sampling strategy that distils (one_shot, kd, ats)"),
    ("train", lambda a: train_argv(a, "--sampling_strategy", "standard", "--distill_hidden_states", "True"),
     "--distill_hidden_states needs a sampling strategy that distils"),
    ("train", lambda a: train_argv(a, "--init_from_teacher", "True"), "--init_from_teacher True needs --teacher"),
    ("train", lambda a: train_argv(a, "--distill_full_network", "True"), "--distill_full_network True needs --teacher"),
    ("search", lambda a: search_argv(a, "--search_strategy", "bogus"), "unknown --search_strategy 'bogus'"),
    ("search", lambda a: search_argv(a, "--num_samples", "0"), "--num_samples must be positive"),
    ("search", lambda a: search_argv(a, "--objective", "speed"), "unknown --objective 'speed'"),
    ("search", lambda a: search_argv(a, "--sub_network_execution", "fast"), "unknown --sub_network_execution"),
    ("search", lambda a: search_argv(a, "--checkpoint_dir_model", "/no/ckpt"), "does not exist; run train_supernet"),
    ("search", lambda a: search_argv(a, "--checkpoint_dir_model", str(a["root"] / "plain_model")),
     "is not a super-network checkpoint"),
    ("search", lambda a: search_argv(a, "--search_space", "medium"), "trained with --search_space small"),
    ("search", lambda a: search_argv(a)[:2] + ["--task_name", "mrpc"] + search_argv(a)[4:],
     "trained with --task_name rte"),
    ("search", lambda a: ["--model_name_or_path", "bert-base-cased"] + search_argv(a)[2:],
     "trained with --model_name_or_path"),
    ("search", lambda a: search_argv(a, "--cost_seq_len", "4096"), "--cost_seq_len 4096 exceeds"),
    ("select", lambda a: ["--results", "/no/results.json", "--task_name", "rte"], "does not exist"),
    ("plot", lambda a: ["/no/results.json"], "does not exist"),
]
SCRIPTS = {"train": train_supernet, "search": run_offline_search, "select": select_and_extract, "plot": plot_pareto}


@pytest.mark.parametrize("script, make_argv, message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_clear_line_and_exit_code_2(assets, capsys, monkeypatch, script, make_argv, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        exit_on_usage_error(partial(SCRIPTS[script].main, make_argv(assets)))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and any(part in errors[0] for part in message.split("|")), errors
    assert not (assets["root"] / "never_written").exists()


def test_bad_input_through_the_real_command_line(assets):
    result = subprocess.run(
        [sys.executable, "run_offline_search.py", *search_argv(assets, "--search_space", "medium")],
        capture_output=True, text=True, cwd=PROJECT_DIR, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the checkpoint was trained with --search_space")


MISSPELLED_FLAGS = [
    (train_supernet, ["--model_name_or_path", "m", "--learning_rte", "1e-3"], "--learning_rte", "--learning_rate"),
    (run_offline_search, ["--model_name_or_path", "m", "--num_sample", "3"], "--num_sample", "--num_samples"),
    (select_and_extract, ["--result", "results.json"], "--result", "--results"),
    (plot_pareto, ["results.json", "--tabel"], "--tabel", "--table"),
    (launch_supernet_training, ["--sampling_stategy", "kd", "--dry_run"], "--sampling_stategy", "--sampling_strategy"),
    (launch_offline_search, ["--search_strategy=ehvi", "--dry_run", "--seeed", "1"], "--seeed", "--seed"),
    (launch_all_supernet_training, ["--task_name", "rte", "--dry_run"], "--task_name", "--task_names"),
    (launch_all_offline_search, ["--search_strategy", "ehvi"], "--search_strategy", "--search_strategies"),
    (bench_sub_networks, ["--num_config", "3"], "--num_config", "--num_configs"),
    (bench_search_memory, ["--num_sample", "3"], "--num_sample", "--num_samples"),
    (gpu_check, ["--output", "check.json", "--max_minute", "1"], "--max_minute", "--max_minutes"),
    (study_glue, ["--quik"], "--quik", "--quick"),
    (importance_orders, ["--fine_tune", "checkpoint"], "--fine_tune", "--fine_tuned"),
    (prefix_sub_networks, ["--checkpoint", "checkpoint"], "--checkpoint", "--checkpoints"),
    (make_tiny_lm, ["--output", "tiny_lm"], "--output", "--output_dir"),
    (launch_standard_nas, ["--n_worker", "4", "--dry_run"], "--n_worker", "--n_workers"),
    (run_standard_nas, ["--model_name_or_path", "m", "--n_worker", "4"], "--n_worker", "--n_workers"),
]


@pytest.mark.parametrize(
    "script, argv, unknown, closest", MISSPELLED_FLAGS, ids=[case[0].__name__ for case in MISSPELLED_FLAGS]
)
def test_a_misspelled_flag_names_itself_and_the_closest_valid_flag(capsys, script, argv, unknown, closest):
    with pytest.raises(SystemExit) as exit_info:
        exit_on_usage_error(partial(script.main, argv))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: unknown flag {unknown}; did you mean {closest}?\n"


def test_a_stray_value_and_an_abbreviated_flag_are_refused(capsys):
    for argv, message in (
        (["--model_name_or_path", "m", "stray"], "error: unexpected argument 'stray'"),
        (["--model_name_or_path", "m", "--learning", "1e-3"], "error: unknown flag --learning; did you mean"),
    ):
        with pytest.raises(SystemExit):
            exit_on_usage_error(partial(train_supernet.main, argv))
        assert capsys.readouterr().err.startswith(message)


def test_a_misspelled_flag_through_the_real_command_line():
    result = subprocess.run(
        [sys.executable, "train_supernet.py", "--model_name_or_path", "m", "--learning_rte", "1e-3"],
        capture_output=True, text=True, cwd=PROJECT_DIR, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: unknown flag --learning_rte; did you mean --learning_rate?"
