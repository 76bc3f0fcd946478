"""Evaluation in file order against length-sorted batches (what `make_dataloader` does unshuffled), side by side.

A search evaluates the same validation split once per sub-network, so the padding of its batches is paid a
hundred times over. This times `evaluate` on a checkpoint's validation split for the full network and a
half-size sub-network with batches in file order and with `length_sorted_batches`, and checks that the
metrics agree (BENCHMARKS.md, "Length-sorted evaluation").

    python bench/bench_eval_order.py --checkpoint ../study_runs/stsb/supernet_standard --task_name stsb \
        --data_dir ../shared/data/glue --output stsb_eval_order.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sub_networks import machine_info  # noqa: E402

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits  # noqa: E402
from nas_llm.model.models import load_supernet  # noqa: E402
from nas_llm.model.search_spaces import make_search_space  # noqa: E402
from nas_llm.model.slicing import runner_for  # noqa: E402
from nas_llm.training.evaluation import evaluate  # noqa: E402

SUB_NETWORKS = {"full": {"num_layers": 6, "num_heads": 12, "num_units": 1536},
                "half": {"num_layers": 6, "num_heads": 6, "num_units": 768}}


def padded_tokens(batches: Iterable[dict[str, torch.Tensor]]) -> int:
    return sum(batch["input_ids"].numel() for batch in batches)


def parse_args() -> argparse.Namespace:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a super-network or fine-tuned checkpoint of the task")
    parser.add_argument("--task_name", required=True, help="the GLUE task whose validation split is timed")
    parser.add_argument("--data_dir", required=True, help="GLUE files in the <TASK>/{train,dev}.tsv layout")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="validation examples")
    parser.add_argument("--max_seq_length", type=int, default=128, help="tokens per example at most")
    parser.add_argument("--batch_size", type=int, default=128, help="validation examples per batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per arm; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, required=True, help="JSON file for the measurements")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_supernet(args.checkpoint)
    model.eval()
    data_args = DataArguments(task_name=args.task_name, data_dir=args.data_dir, max_seq_length=args.max_seq_length,
                              max_eval_samples=args.max_eval_samples)
    validation = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args, ("validation",))["validation"]
    sorted_loader = make_dataloader(validation, tokenizer, args.batch_size, False, 0)
    loaders = {
        "file order": DataLoader(validation, batch_size=args.batch_size, collate_fn=sorted_loader.collate_fn),
        "length-sorted": sorted_loader,
    }
    space = make_search_space("small", model.config)
    rows = []
    for name, config in SUB_NETWORKS.items():
        sub_network = space.to_sub_network(config)
        for order, loader in loaders.items():
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                metrics = evaluate(model, loader, args.task_name, torch.device("cpu"), sub_network, runner_for("slice"))
                seconds.append(time.perf_counter() - start)
            rows.append({"sub_network": name, "order": order, "padded_tokens": padded_tokens(loader),
                         "seconds": min(seconds), "metrics": metrics})
            print(f"{name:5} {order:14} {rows[-1]['padded_tokens']:8d} tokens {min(seconds):7.2f} s  {metrics}",
                  flush=True)
    write_json_atomic(args.output, {"command": " ".join(sys.argv), "machine": machine_info(),
                                    "num_examples": len(validation), "rows": rows})


if __name__ == "__main__":
    exit_on_usage_error(main)
