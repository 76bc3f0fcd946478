"""Which model should the importance scores of `--reorder_units importance` be computed on?

Scores every head and neuron (importance.py) on the model super-network training starts from (the
pre-trained body with a new task head, as train_supernet.py does) and on a model fine-tuned on the task
(e.g. train_supernet.py --sampling_strategy standard), on the same training batches. Reports their rank
agreement per layer, and how well each order picks units for the fine-tuned model without retraining:
the validation metric of the fine-tuned model keeping, in every layer, the top-k units of each order
(or the first k, the pre-trained order that prefix spaces keep without reordering).

    python bench/importance_orders.py --model_name_or_path $MINILM --fine_tuned runs/standard \
        --task_name sst2 --data_dir ../shared/data/glue --max_train_samples 2000 --max_eval_samples 200 \
        --output orders.json
"""

from __future__ import annotations

import argparse
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import set_seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, task_info_for, tokenize_splits  # noqa: E402
from nas_llm.data.metrics import MAIN_METRIC  # noqa: E402
from nas_llm.model.mask import masked  # noqa: E402
from nas_llm.model.models import load_model, load_supernet  # noqa: E402
from nas_llm.model.sub_network import SubNetwork  # noqa: E402
from nas_llm.training.evaluation import evaluate  # noqa: E402
from nas_llm.training.importance import unit_importance  # noqa: E402

KEPT = ((3, 384), (6, 768), (9, 1152))  # heads and neurons kept per layer (MiniLM-L6: 12 heads, 1536 neurons)


def top_k(order: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros(order.shape, dtype=torch.bool).scatter(1, order[:, :k], True)


def main(argv: list[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True,
                        help="the pre-trained model super-network training starts from")
    parser.add_argument("--fine_tuned", required=True, help="checkpoint of the model fine-tuned on the task")
    parser.add_argument("--task_name", required=True, help="the GLUE task")
    parser.add_argument("--data_dir", required=True, help="GLUE files in the <TASK>/{train,dev}.tsv layout")
    parser.add_argument("--max_train_samples", type=int, help="training examples (default: all)")
    parser.add_argument("--max_eval_samples", type=int, help="validation examples (default: all)")
    parser.add_argument("--batch_size", type=int, default=32, help="examples per importance batch")
    parser.add_argument("--num_importance_batches", type=int, default=32,
                        help="training batches the scores are summed over, as train_supernet.py's flag")
    parser.add_argument("--seed", type=int, default=42, help="train_supernet.py's --seed: the new head's weights")
    parser.add_argument("--output", required=True, help="JSON file for the agreement and the validation table")
    args = parser.parse_args(argv)
    data_args = DataArguments(
        task_name=args.task_name, data_dir=args.data_dir, max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
    )
    fine_tuned, tokenizer, _ = load_supernet(args.fine_tuned)
    splits = load_raw_splits(data_args)
    tokenized = tokenize_splits(splits, tokenizer, data_args)
    set_seed(args.seed)
    starting = load_model(args.model_name_or_path, task_info_for(splits).label_names, tokenizer)

    def batches():  # the batches train_supernet.py scores on
        loader = make_dataloader(tokenized["train"], tokenizer, args.batch_size, True, args.seed)
        return islice(loader, args.num_importance_batches)

    scores = {"starting": unit_importance(starting, batches()), "fine_tuned": unit_importance(fine_tuned, batches())}
    agreement = {
        kind: [
            float(spearmanr(a, b).statistic)
            for a, b in zip(getattr(scores["starting"], kind), getattr(scores["fine_tuned"], kind), strict=True)
        ]
        for kind in ("heads", "neurons")
    }
    validation = make_dataloader(tokenized["validation"], tokenizer, 64, False, 0)
    starting_scores = scores["starting"]
    orders = {
        "pre-trained positions (first k)": (
            torch.arange(starting_scores.heads.shape[1]).expand_as(starting_scores.heads),
            torch.arange(starting_scores.neurons.shape[1]).expand_as(starting_scores.neurons),
        ),
        "starting model's importance": (scores["starting"].head_order(), scores["starting"].neuron_order()),
        "fine-tuned model's importance": (scores["fine_tuned"].head_order(), scores["fine_tuned"].neuron_order()),
    }
    metric = MAIN_METRIC[args.task_name]
    rows = []
    for heads, neurons in KEPT:
        row = {"heads": heads, "neurons": neurons}
        for name, (head_order, neuron_order) in orders.items():
            sub_network = SubNetwork(top_k(head_order, heads), top_k(neuron_order, neurons))
            scores_of_order = evaluate(fine_tuned, validation, args.task_name, torch.device("cpu"), sub_network, masked)
            row[name] = scores_of_order[metric]
        rows.append(row)
    write_json_atomic(args.output, {"spearman_per_layer": agreement, "top_k_validation": rows})
    print("Spearman rank correlation per layer, starting vs fine-tuned scores:")
    for kind, values in agreement.items():
        print(f"  {kind}: " + ", ".join(f"{value:.2f}" for value in values) + f" (mean {np.mean(values):.2f})")
    print(f"| heads, neurons kept per layer | {' | '.join(orders)} |")
    print("|---|" + "---|" * len(orders))
    for row in rows:
        print(f"| {row['heads']}, {row['neurons']} | " + " | ".join(f"{row[name]:.3f}" for name in orders) + " |")


if __name__ == "__main__":
    exit_on_usage_error(main)
