"""Peak memory of pruning a Qwen2.5-0.5B-sized causal LM without super-network training, float32 vs bfloat16.

No hub here, so the model is a random one with Qwen2.5-0.5B's shapes (24 layers, hidden 896, 14 query heads in
2 KV groups, FFN 4,864, vocabulary 151,936, tied embeddings: 494M parameters) and the tiny corpus and tokenizer
of make_tiny_lm.py; memory and time depend on the shapes, not on the weights' values. Each stage runs in its
own process under /usr/bin/time, which reports the peak resident set size:

    python bench/bench_lm_memory.py --output_dir /tmp/lm_memory

1. train_supernet.py --sampling_strategy none: load, score full and smallest network, write the checkpoint;
2. run_offline_search.py on it with --torch_dtype float32 and bfloat16.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from make_tiny_lm import tiny_tokenizer, write_corpus
from transformers import AutoModelForCausalLM, Qwen2Config

PROJECT = Path(__file__).resolve().parents[1]
QWEN25_05B = dict(
    hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
    vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
)


def peak_rss_gb(command: list[str]) -> tuple[float, float]:
    """(peak resident set size in GB, wall-clock seconds) of one command, from GNU time."""
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M %e", *command], capture_output=True, text=True, cwd=PROJECT, check=True
    )
    kilobytes, seconds = result.stderr.strip().splitlines()[-1].split()
    return int(kilobytes) / 2**20, float(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="the random model, its corpus, the stages' outputs and the measurements")
    parser.add_argument("--block_size", type=int, default=128, help="tokens per language-modelling example")
    args = parser.parse_args(argv)
    root = args.output_dir
    model_dir = root / "model"
    if not model_dir.is_dir():
        tokenizer = tiny_tokenizer(QWEN25_05B["max_position_embeddings"])
        torch.manual_seed(0)
        config = Qwen2Config(**QWEN25_05B, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        write_corpus(root / "train.txt", 400, seed=0)
        write_corpus(root / "test.txt", 100, seed=1)
    data = ["--task_name", "lm", "--train_file", str(root / "train.txt"), "--validation_file", str(root / "test.txt"),
            "--block_size", str(args.block_size), "--max_eval_samples", "4", "--max_test_samples", "4"]
    python = [sys.executable]
    measurements = {}
    measurements["none (bfloat16)"] = peak_rss_gb([
        *python, "train_supernet.py", "--model_name_or_path", str(model_dir), *data, "--sampling_strategy", "none",
        "--torch_dtype", "bfloat16", "--per_device_eval_batch_size", "2", "--search_space", "small",
        "--output_dir", str(root / "pretrained"), "--log_dir", str(root / "tb"), "--save_strategy", "no",
    ])
    for dtype in ("float32", "bfloat16"):
        measurements[f"search ({dtype})"] = peak_rss_gb([
            *python, "run_offline_search.py", "--model_name_or_path", str(model_dir), *data,
            "--checkpoint_dir_model", str(root / "pretrained"), "--torch_dtype", dtype, "--search_space", "small",
            "--search_strategy", "random_search", "--num_samples", "2", "--per_device_eval_batch_size", "2",
            "--cost_seq_len", str(args.block_size), "--latency_repeats", "1",
            "--output_dir", str(root / f"search_{dtype}"), "--log_dir", str(root / "tb"),
            "--overwrite_output_dir", "True",
        ])
    print(json.dumps({stage: {"peak_rss_gb": round(gb, 2), "wall_s": round(s, 1)}
                      for stage, (gb, s) in measurements.items()}, indent=2))


if __name__ == "__main__":
    main()
