"""The steps of select_and_extract.py around a chosen point: its model, its test data, writing it, the report.

A point of a search is extracted from the super-network; a point of run_standard_nas.py or run_rfp.py is
already a smaller model of its own (its `trial_checkpoint_dir`), copied as it was saved.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets
from torch import nn
from transformers import PreTrainedTokenizerBase

from nas_llm.data.data import DataArguments, TaskInfo, task_info_for
from nas_llm.data.lm_data import LMArguments, load_examples, task_metrics_key, task_splits
from nas_llm.extraction.extract import extract_sub_network, load_extracted, num_parameters, save_extracted
from nas_llm.model.label_scale import predicting_label_scale
from nas_llm.model.models import load_supernet, load_tokenizer, save_model, set_label_names
from nas_llm.model.pruned_structure import STRUCTURE_KEY
from nas_llm.model.sub_network import SubNetwork

logger = logging.getLogger(__name__)


def has_own_weights(point: dict) -> bool:
    """A point of standard NAS or RFP: a model of its own, not a sub-network of a super-network."""
    return "trial_checkpoint_dir" in point


def unpruned_source(point: dict, results: dict, checkpoint: str) -> str:
    """The full model the point was cut from, which teaches its recovery by default: the super-network
    (`checkpoint`); for a point of run_rfp.py the fine-tuned model it pruned; for a standard-NAS trial the
    pre-trained model (which cannot teach: its recovery needs --teacher_model_name_or_path)."""
    if not has_own_weights(point):
        return checkpoint
    return results.get("fine_tuned_checkpoint") or results["model_name_or_path"]


def has_teacher(point: dict, results: dict) -> bool:
    """Whether the point's unpruned source is a fine-tuned model that can teach its recovery."""
    return not has_own_weights(point) or "fine_tuned_checkpoint" in results


def load_chosen(
    point: dict, sub_network: SubNetwork, results: dict, checkpoint_dir_model: str | None, torch_dtype: str | None
) -> tuple[str, nn.Module | None, nn.Module, PreTrainedTokenizerBase]:
    """The checkpoint the point comes from (the super-network: --checkpoint_dir_model, else the one `results`
    recorded), the super-network (None for a point with its own weights), the point's model and its tokenizer."""
    if has_own_weights(point):
        checkpoint = point["trial_checkpoint_dir"]
        return checkpoint, None, load_extracted(checkpoint), load_tokenizer(checkpoint)
    checkpoint = checkpoint_dir_model or results["checkpoint_dir_model"]
    supernet, tokenizer, _ = load_supernet(checkpoint, torch_dtype)
    return checkpoint, supernet, extract_sub_network(supernet, sub_network), tokenizer


def extraction_data(
    data_args: DataArguments, lm_args: LMArguments, tokenizer: PreTrainedTokenizerBase, extracted: nn.Module,
    with_training_split: bool,
) -> tuple[datasets.DatasetDict, str, TaskInfo | None]:
    """The tokenized test split (and the training and validation splits if recovery needs them), the metrics key
    and the task (None for language modelling). Sets the extracted model's label names, for super-networks
    trained before they recorded them."""
    examples = load_examples(data_args)
    task = None if examples is None else task_info_for(examples)
    if task is not None:
        set_label_names(extracted.config, task.label_names)
    names = ("train", "validation", "test") if with_training_split else ("test",)
    tokenized = task_splits(data_args, lm_args, tokenizer, extracted.config, examples, names)
    return tokenized, task_metrics_key(data_args.task_name, examples), task


def save_chosen(
    extracted: nn.Module, tokenizer: PreTrainedTokenizerBase, sub_network: SubNetwork, point: dict,
    output_dir: str, recovered: bool,
) -> str:
    """Write the point's model to `output_dir`; the kind of checkpoint written (standard or custom_code)."""
    if not has_own_weights(point):
        return save_extracted(extracted, tokenizer, sub_network, output_dir)
    # already a smaller model: copied as the trial saved it (its code and tokenizer), with the recovered weights
    shutil.copytree(point["trial_checkpoint_dir"], output_dir, dirs_exist_ok=True)
    custom = getattr(extracted.config, STRUCTURE_KEY, None) is not None
    if recovered:
        with predicting_label_scale(extracted):
            save_model(extracted, Path(output_dir), original_format=not custom)
    return "custom_code" if custom else "standard"


def shipped_test_metrics(extraction: dict[str, Any]) -> dict[str, float]:
    """The test metrics of the model an extraction.json describes: after recovery's epochs, else after least
    squares (where its scales were kept), else as extracted."""
    for step in ("recovery", "lstsq_recovery"):
        record = extraction.get(step)
        if record is not None and record.get("kept", True):
            return record["test_after"]
    return extraction["test_extracted"]


def extraction_report(
    results_path: str, checkpoint: str, point: dict, kind: str, data_args: DataArguments, lm_args: LMArguments,
    extracted: nn.Module, test: dict[str, float], lstsq_recovery: dict | None, recovery: dict | None,
) -> dict[str, Any]:
    """extraction.json: the point, the checkpoint written, its size and test metrics, whether they match the
    search's record, and the recovery's records if any."""
    report = {
        "results": results_path,
        "checkpoint_dir_model": checkpoint,
        "pareto_point": {key: value for key, value in point.items() if key != "sub_network"},
        "checkpoint_kind": kind,
        "data": asdict(data_args) | asdict(lm_args),
        "num_parameters": num_parameters(extracted),
        "test_extracted": test,
        "test_recorded_by_search": point.get("test"),  # None: a point off the Pareto set has no test metric
        "matches_search": "test" not in point or all(
            math.isclose(test[name], point["test"][name], rel_tol=1e-4, abs_tol=1e-6) for name in point["test"]
        ),
    }
    if lstsq_recovery is not None:
        report["lstsq_recovery"] = lstsq_recovery
    if recovery is not None:
        report["recovery"] = recovery
    return report


def log_extraction(report: dict[str, Any], point: dict, output_dir: str) -> None:
    """What was written, and a warning if its test metrics differ from the search's record."""
    logger.info(
        "Extracted %d parameters (%.1f%% of the unpruned network, %s checkpoint) to %s; test %s (search recorded %s)",
        report["num_parameters"], 100 * point["params"], report["checkpoint_kind"], output_dir,
        report["test_extracted"], point.get("test"),
    )
    if not report["matches_search"]:
        logger.warning("the extracted model's test metrics differ from the search's record for this point")
