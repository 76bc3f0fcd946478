"""Validation and test metrics of fixed prefix sub-networks of super-network checkpoints, side by side.

Used for `--reorder_units` (BENCHMARKS.md, "Importance ordering"): the same small-space configs (the
first layers, heads and neurons) of checkpoints trained with and without reordering, on the same splits.

    python bench/prefix_sub_networks.py --task_name sst2 --data_dir ../shared/data/glue \
        --max_eval_samples 200 --max_test_samples 200 --checkpoints runs/none runs/importance \
        --labels none importance --output prefix.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits  # noqa: E402
from nas_llm.data.metrics import MAIN_METRIC  # noqa: E402
from nas_llm.model.cost import count_parameters  # noqa: E402
from nas_llm.model.models import load_supernet  # noqa: E402
from nas_llm.model.search_spaces import make_search_space  # noqa: E402
from nas_llm.model.slicing import runner_for  # noqa: E402
from nas_llm.training.evaluation import evaluate  # noqa: E402

# smallest, a grid of mid sizes (layers x (heads, neurons)) of MiniLM-L6 (12 heads, 1536 neurons), the full network
DEFAULT_CONFIGS = [
    {"num_layers": 1, "num_heads": 1, "num_units": 1},
    *(
        {"num_layers": layers, "num_heads": heads, "num_units": units}
        for layers in (2, 4, 6) for heads, units in ((3, 384), (6, 768), (9, 1152))
    ),
    {"num_layers": 6, "num_heads": 12, "num_units": 1536},
]


def evaluate_checkpoint(checkpoint: str, data_args: DataArguments, configs: list[dict], batch_size: int) -> list[dict]:
    model, tokenizer, _ = load_supernet(checkpoint)
    tokenized = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args)
    loaders = {
        split: make_dataloader(tokenized[split], tokenizer, batch_size, False, 0) for split in ("validation", "test")
    }
    space = make_search_space("small", model.config)
    full = count_parameters(model, space.largest()).total
    rows = []
    for config in configs:
        sub_network = space.to_sub_network(config)
        scores = {
            split: evaluate(model, loader, data_args.task_name, torch.device("cpu"), sub_network, runner_for("slice"))
            for split, loader in loaders.items()
        }
        rows.append({"config": config, "params": count_parameters(model, sub_network).total / full, **scores})
    return rows


def markdown(results: dict[str, list[dict]], metric: str) -> str:
    labels = list(results)
    header = "| config (layers, heads, units) | params | " + " | ".join(
        f"{label} val {metric} | {label} test {metric}" for label in labels
    ) + " |"
    lines = [header, "|" + "---|" * (2 + 2 * len(labels))]
    for index, row in enumerate(results[labels[0]]):
        config = row["config"]
        cells = [f"({config['num_layers']}, {config['num_heads']}, {config['num_units']})", f"{row['params']:.3f}"]
        for label in labels:
            other = results[label][index]
            cells += [f"{other['validation'][metric]:.3f}", f"{other['test'][metric]:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="super-networks to compare")
    parser.add_argument("--labels", nargs="+", required=True, help="one name per checkpoint, for the table")
    parser.add_argument("--task_name", required=True, help="the task they were trained on")
    parser.add_argument("--data_dir", required=True, help="GLUE files in the <TASK>/{train,dev}.tsv layout")
    parser.add_argument("--max_train_samples", type=int,
                        help="training examples tokenized (only validation and test are scored)")
    parser.add_argument("--max_eval_samples", type=int, help="validation examples (default: all)")
    parser.add_argument("--max_test_samples", type=int, help="test examples (default: all)")
    parser.add_argument("--configs", type=json.loads, default=DEFAULT_CONFIGS, help="JSON list of small-space configs")
    parser.add_argument("--batch_size", type=int, default=64, help="examples per evaluation batch")
    parser.add_argument("--output", required=True, help="JSON file for the metrics per config")
    args = parser.parse_args(argv)
    data_args = DataArguments(
        task_name=args.task_name, data_dir=args.data_dir, max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples, max_test_samples=args.max_test_samples,
    )
    results = {
        label: evaluate_checkpoint(checkpoint, data_args, args.configs, args.batch_size)
        for label, checkpoint in zip(args.labels, args.checkpoints, strict=True)
    }
    write_json_atomic(args.output, {"checkpoints": dict(zip(args.labels, args.checkpoints, strict=True)), **results})
    print(markdown(results, MAIN_METRIC[args.task_name]))


if __name__ == "__main__":
    exit_on_usage_error(main)
