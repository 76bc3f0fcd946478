"""Shuffled training batches against length-grouped ones (`--group_by_length`), side by side.

Shuffled batches are padded to their longest example, so on text of mixed lengths much of every step is
padding. For each task this counts the padded tokens of one training epoch both ways (the whole split, exact)
and times the same number of plain fine-tuning steps (forward, backward, AdamW) of pre-trained MiniLM-L6 on
the first batches of each order (BENCHMARKS.md, "Length-grouped training batches").

    python bench/bench_train_order.py --data_dir ../shared/data/glue --tasks stsb,mrpc,sst2 \
        --max_train_samples sst2=10000 --steps 40 --output train_order.json
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_eval_order import padded_tokens  # noqa: E402
from bench_sub_networks import machine_info  # noqa: E402
from study_glue import minilm_path, per_task_counts  # noqa: E402

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, task_info_for, tokenize_splits  # noqa: E402
from nas_llm.model.models import load_model, load_tokenizer  # noqa: E402
from nas_llm.training.objective import classifier_logits, task_loss  # noqa: E402

ORDERS = {"shuffled": False, "length-grouped": True}


def seconds_for_steps(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """Wall-clock of one fine-tuning step per batch (forward, backward, AdamW)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    start = time.perf_counter()
    for batch in batches:
        task_loss(classifier_logits(model, batch).float(), batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def parse_args() -> argparse.Namespace:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="GLUE files in the <TASK>/{train,dev}.tsv layout")
    parser.add_argument("--tasks", default="stsb,mrpc,sst2", help="comma-separated GLUE tasks")
    parser.add_argument("--max_train_samples", default=None, help="per task, e.g. sst2=10000 (others: all)")
    parser.add_argument("--max_seq_length", type=int, default=128, help="tokens per example at most")
    parser.add_argument("--batch_size", type=int, default=32, help="training examples per step")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per order (0: count only)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seeds the shuffling of both orders")
    parser.add_argument("--output", type=Path, required=True, help="JSON file for the measurements")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    max_train_samples = per_task_counts(args.max_train_samples, "--max_train_samples") if args.max_train_samples \
        else {}
    tokenizer = load_tokenizer(minilm_path())
    rows = []
    for task in args.tasks.split(","):
        data_args = DataArguments(task_name=task, data_dir=args.data_dir, max_seq_length=args.max_seq_length,
                                  max_train_samples=max_train_samples.get(task))
        splits = load_raw_splits(data_args)
        train = tokenize_splits(splits, tokenizer, data_args, ("train",))["train"]
        real_tokens = sum(len(ids) for ids in train["input_ids"])
        label_names = task_info_for(splits).label_names
        for order, grouped in ORDERS.items():
            loader = make_dataloader(train, tokenizer, args.batch_size, True, args.seed, grouped)
            row = {"task": task, "order": order, "examples": len(train), "real_tokens": real_tokens,
                   "padded_tokens_per_epoch": padded_tokens(loader), "steps": args.steps}
            if args.steps:
                batches = list(islice(loader, args.steps))  # the next epoch's first batches
                torch.manual_seed(args.seed)
                row["seconds"] = seconds_for_steps(load_model(minilm_path(), label_names, tokenizer), batches)
                row["timed_padded_tokens"] = padded_tokens(batches)
            rows.append(row)
            print(row, flush=True)
    write_json_atomic(args.output, {"command": " ".join(sys.argv), "machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    exit_on_usage_error(main)
