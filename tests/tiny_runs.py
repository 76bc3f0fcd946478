"""Tiny training and search runs that several end-to-end test files share (each test file imports them from here).

The trained tiny BERT super-network that many tests only read is the session fixture `trained_bert` (conftest.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_assets import write_tiny_model_dir, write_tiny_rte, write_tiny_sentiment
from transformers import AutoTokenizer

import run_offline_search
import train_supernet
from nas_llm.data import data
from nas_llm.data.data import DataArguments, load_raw_splits


def scalar_tags(log_dir) -> set[str]:
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def train(tmp_path, family: str, strategy: str = "one_shot", space: str = "small", token_ids: bool = True,
          num_train: int = 40, extra=()):
    model_dir = write_tiny_model_dir(tmp_path / "model", family, token_ids=token_ids)
    data_dir = write_tiny_rte(tmp_path / "glue", num_train=num_train)
    checkpoint = tmp_path / "supernet"
    train_supernet.main([
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(checkpoint), "--log_dir", str(tmp_path / "tb_train"),
        "--sampling_strategy", strategy, "--search_space", space, "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--save_strategy", "epoch", "--seed", "0", "--fp16", "True", *extra,
    ])
    return model_dir, data_dir, checkpoint


def search(tmp_path, model_dir, data_dir, checkpoint, strategy: str, space: str = "small", seed: int = 0, extra=(),
           num_samples: int = 10):
    output_dir = tmp_path / f"results_{strategy}_{seed}"
    run_offline_search.main([
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--checkpoint_dir_model", str(checkpoint), "--search_space", space, "--search_strategy", strategy,
        "--num_samples", str(num_samples), "--output_dir", str(output_dir), "--log_dir", str(tmp_path / "tb_search"),
        "--seed", str(seed), "--cost_seq_len", "16", "--latency_repeats", "1", *extra,
    ])
    return json.loads((output_dir / "results_rte.json").read_text())


def record_tokenized_splits(monkeypatch, module) -> list[list[str]]:
    """The names of the splits each call of `module`'s tokenize_splits returns, in call order."""
    calls = []

    def tokenize_and_record(splits, *args):
        tokenized = data.tokenize_splits(splits, *args)
        calls.append(sorted(tokenized))
        return tokenized

    monkeypatch.setattr(module, "tokenize_splits", tokenize_and_record)
    return calls


@dataclass(frozen=True)
class ToyRun:
    """A tiny BERT super-network trained on write_tiny_sentiment's task, with its inputs and logs."""

    model_dir: Path
    train_file: Path
    test_file: Path
    supernet: Path
    log_dir: Path
    regression: bool

    def data_flags(self) -> list[str]:
        return ["--train_file", str(self.train_file), "--validation_file", str(self.test_file)]

    def split(self, name: str) -> tuple[list[str], np.ndarray]:
        """Sentences and labels of a split as the scripts split the files (data.py is tested on its own)."""
        split = load_raw_splits(DataArguments(train_file=str(self.train_file), validation_file=str(self.test_file)))
        return list(split[name]["sentence"]), np.array(split[name]["label"])


def train_toy(root: Path, regression: bool, strategy: str = "one_shot") -> ToyRun:
    model_dir = write_tiny_model_dir(root / "model", "bert")
    train_file, test_file = write_tiny_sentiment(root / "data", regression=regression)
    run = ToyRun(model_dir, train_file, test_file, root / "supernet", root / "tb_train", regression)
    train_supernet.main([
        "--model_name_or_path", str(model_dir), *run.data_flags(), "--output_dir", str(run.supernet),
        "--log_dir", str(run.log_dir), "--sampling_strategy", strategy, "--search_space", "small",
        "--num_train_epochs", str(EPOCHS), "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
        "--logging_steps", "1", "--save_strategy", "no", "--seed", "0",
    ])
    return run


@torch.no_grad()
def logits_on(model, run: ToyRun, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """(logits, labels) of a plain model on a split: one padded batch, no code of the project involved."""
    sentences, labels = run.split(split)
    batch = AutoTokenizer.from_pretrained(run.model_dir)(sentences, padding=True, return_tensors="pt")
    return model.eval()(**batch).logits, labels


def training_loss(model, run: ToyRun) -> float:
    """How badly a plain model fits the training split: cross-entropy, or 1 - Spearman for regression (a rank
    loss, whatever scale the training gives its outputs)."""
    if run.regression:
        return 1 - main_metric(model, run, "train")
    logits, labels = logits_on(model, run, "train")
    return F.cross_entropy(logits, torch.from_numpy(labels)).item()


EPOCHS = 5


def main_metric(model, run: ToyRun, split: str) -> float:
    """Accuracy, or Spearman's rank correlation for regression, computed by hand."""
    logits, labels = logits_on(model, run, split)
    if run.regression:
        return float(spearmanr(logits[:, 0].numpy(), labels).statistic)
    return float((logits.argmax(-1).numpy() == labels).mean())
