"""Evaluate a saved checkpoint (extracted or recovered) on a task's test split, in a process of its own.

A shipped model must give, reloaded from disk by a fresh process, the metric its extraction.json records;
the GLUE study checks its recovered sub-networks this way. Takes the data flags of the entry scripts.

    python bench/evaluate_checkpoint.py --checkpoint ./pruned --task_name sst2 --data_dir ../shared/data/glue \
        --output ./pruned/reload.json
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_llm.common.arguments import parse_arguments  # noqa: E402
from nas_llm.common.errors import UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.common.precision import default_device  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, task_info_for, tokenize_splits  # noqa: E402
from nas_llm.data.metrics import metric_task  # noqa: E402
from nas_llm.extraction.extract import load_extracted  # noqa: E402
from nas_llm.extraction.selection import shipped_test_metrics  # noqa: E402
from nas_llm.model.models import load_tokenizer  # noqa: E402
from nas_llm.training.evaluation import evaluate  # noqa: E402


@dataclass
class CheckpointArguments:
    checkpoint: str = field(metadata={"help": "A checkpoint written by select_and_extract.py (or any HF model)."})
    output: str = field(metadata={"help": "Where the JSON report goes: the test metrics, and whether they match "
                                          "the ones the checkpoint's extraction.json records."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})


def recorded_test_metrics(checkpoint: Path) -> dict | None:
    """What extraction.json says the checkpoint scores: after recovery if it was recovered."""
    extraction_file = checkpoint / "extraction.json"
    if not extraction_file.is_file():
        return None
    return shipped_test_metrics(json.loads(extraction_file.read_text()))


def main(argv: list[str] | None = None) -> None:
    checkpoint_args, data_args = parse_arguments((CheckpointArguments, DataArguments), argv)
    checkpoint = Path(checkpoint_args.checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise UsageError(f"--checkpoint {checkpoint} holds no config.json; pass a folder select_and_extract.py wrote")
    device = default_device()
    model, tokenizer = load_extracted(checkpoint).to(device).eval(), load_tokenizer(str(checkpoint))
    splits = load_raw_splits(data_args)
    tokenized = tokenize_splits(splits, tokenizer, data_args, ("test",))
    loader = make_dataloader(tokenized["test"], tokenizer, checkpoint_args.per_device_eval_batch_size, False, 0)
    test = evaluate(model, loader, metric_task(data_args.task_name, task_info_for(splits).is_regression), device)
    recorded = recorded_test_metrics(checkpoint)
    report = {"checkpoint": str(checkpoint.resolve()), "test": test, "recorded_test": recorded}
    if recorded is not None:
        report["matches_recorded"] = all(
            math.isclose(test[name], recorded[name], rel_tol=1e-4, abs_tol=1e-6) for name in recorded
        )
    write_json_atomic(Path(checkpoint_args.output), report)
    print(json.dumps(report))


if __name__ == "__main__":
    exit_on_usage_error(main)
