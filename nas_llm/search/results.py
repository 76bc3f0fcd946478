"""The results format, in one place: what a search, RFP and standard NAS write and what every reader reads.

An output folder holds `results_<task>.json` (the header: what ran, on what, with which settings; the
unpruned network; every evaluation; the Pareto set with test metrics) and, while a run goes on,
`evaluations.jsonl` (one line per finished evaluation, so a stopped run resumes) with the settings it must
match in `search_settings.json`. plot_pareto.py, select_and_extract.py and the GLUE study read the results
through `load_results`; run_offline_search.py, run_rfp.py and run_standard_nas.py write them through
`write_results`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nas_llm.common.errors import UsageError
from nas_llm.common.io_utils import JsonLinesLog, write_json_atomic
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.pareto import pareto_indices

LOG_FILE = "evaluations.jsonl"
RFP_METHOD = "retraining_free_pruning"  # the `method` of run_rfp.py's results, whose points a search can be seeded with
SETTINGS_FILE = "search_settings.json"
# Kept in evaluations.jsonl for a resumed run, left out of the results file: the masks (the summary says what a
# reader needs) and the per-example validation predictions of a multi-fidelity search's fully scored sub-networks
# or of every sub-network of a search with --record_validation_predictions True (whose results then hold the labels
# they follow, `recorded_validation`).
LOG_ONLY_KEYS = ("sub_network_masks", "validation_predictions")
# What every results file holds, whichever method wrote it; a method adds its own keys after these.
REQUIRED_KEYS = (
    "task_name", "model_name_or_path", "checkpoint_dir_model", "sampling_strategy", "search_space",
    "search_strategy", "seed", "num_samples", "objectives", "cost_seq_len", "latency_batch_size", "device",
    "settings", "unpruned", "evaluations", "pareto_indices", "pareto_set", "runtime_s",
)


def results_file_name(task_name: str | None) -> str:
    return f"results_{task_name or 'custom'}.json"


def is_full_fidelity(record: dict) -> bool:
    """Whether an evaluation scored the whole validation split: a multi-fidelity search's stopped sub-networks
    have errors on a share only (`fidelity` < 1); records without the field scored all of it."""
    return record.get("fidelity", 1.0) == 1.0


def pareto_front(records: list[dict], objectives: list[str], order_by: str | None = None) -> list[int]:
    """Indices of the fully scored records no other fully scored record beats on every objective (all minimised),
    by `order_by` (or index)."""
    full = [index for index, record in enumerate(records) if is_full_fidelity(record)]
    costs = np.array([[records[index][name] for name in objectives] for index in full])
    front = [full[index] for index in pareto_indices(costs)]
    return sorted(front, key=lambda index: records[index][order_by]) if order_by else sorted(front)


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write a results file; refuses one that lacks a key the readers rely on (a writer's bug, not the user's)."""
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise ValueError(f"results for {path} lack {', '.join(missing)}")
    write_json_atomic(path, results)


def load_results(path: str | Path) -> dict[str, Any]:
    """A results file, refused in one line if it is missing or is not one."""
    if not Path(path).is_file():
        raise UsageError(f"results file '{path}' does not exist; pass the results_<task>.json of run_offline_search.py")
    try:
        results = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"'{path}' is not a results file (not JSON: {error})") from None
    if not isinstance(results, dict) or "evaluations" not in results:
        raise UsageError(f"'{path}' is not a results file of run_offline_search.py (no 'evaluations')")
    return results


def finished_results(output_dir: Path, results_path: Path, settings: dict, overwrite: bool) -> bool:
    """Whether `output_dir` already holds this search's results and all its evaluations."""
    if overwrite or not results_path.is_file():
        return False
    logged = len(JsonLinesLog(output_dir / LOG_FILE).read())
    return logged >= settings["num_samples"] and json.loads(results_path.read_text()).get("settings") == settings


def previous_evaluations(output_dir: Path, settings: dict, overwrite: bool) -> tuple[JsonLinesLog, list[dict]]:
    """The log of an earlier run with the same settings (to resume), or a fresh one."""
    log = JsonLinesLog(output_dir / LOG_FILE)
    settings_path = output_dir / SETTINGS_FILE
    records = [] if overwrite else log.read()
    if records and settings_path.is_file():
        previous = json.loads(settings_path.read_text())
        for name in [*settings, *(name for name in previous if name not in settings)]:  # set in one run only too
            value = settings.get(name)
            if previous.get(name) != value:
                raise UsageError(
                    f"--output_dir {output_dir} holds a run with --{name} {previous.get(name)} (this run: {value}); "
                    "repeat its settings to resume it, or pass another --output_dir or --overwrite_output_dir True"
                )
    log.rewrite(records)
    write_json_atomic(settings_path, settings)
    return log, records


def evaluated_point(results_path: str | Path, iteration: int) -> dict[str, Any]:
    """A search's record of `iteration` (its evaluations log keeps the masks), in a Pareto point's form."""
    log = JsonLinesLog(Path(results_path).parent / LOG_FILE)
    records = [record for record in log.read() if record["iteration"] == iteration]
    if not records:
        raise UsageError(f"{log.path} holds no evaluation of --iteration {iteration} (is --results a search's?)")
    record = records[0]
    sub_network = SubNetwork.from_compact(record.pop("sub_network_masks"))
    return record | {"sub_network": sub_network.to_json_dict()}
