"""Seeding a search with retraining-free pruning's answers (`--initial_sub_networks`).

run_rfp.py prunes a fine-tuned model to each budget without training (Kwon et al. 2022); its results file keeps
every budget's masks. The search evaluates those sub-networks first, with the super-network's weights, as
ordinary records marked `seeded_from`, so its Pareto set is at least as good as RFP's masks where the weights
help. The searcher is not told them: its ask/tell protocol learns only from configs it proposed (NSGA-II breeds
each generation from the one it asked), so the searcher's own proposals are those of an unseeded run (without
--multi_fidelity, whose race compares a proposal with every earlier record, seeds included). They come on top
of --num_samples.

Which units RFP's masks name: those of the fine-tuned model, stored in the pre-trained model's order. A
super-network trained with `--reorder_units importance` stores its units most important first (reorder.py), so
there RFP's per-layer counts become prefixes of the stored units; otherwise its units are the pre-trained
model's and the masks are taken as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_llm.common.errors import UsageError
from nas_llm.model.search_spaces import ModelShape
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.results import RFP_METHOD, load_results

FLAG = "--initial_sub_networks"


@dataclass(frozen=True)
class Seed:
    """A sub-network to evaluate before the searcher's proposals, and where it came from (its record's
    `seeded_from`)."""

    sub_network: SubNetwork
    origin: dict[str, Any]


def seed_settings(path: str | None) -> dict:
    """The run setting that names the seed file and its content (a resumed run must repeat both); none when the
    search is not seeded, so unseeded runs keep their settings."""
    if path is None:
        return {}
    return {"initial_sub_networks": f"{Path(path).resolve()} (sha256 {seed_file_sha256(path)})"}


def seed_file_sha256(path: str | Path) -> str:
    if not Path(path).is_file():
        raise UsageError(f"{FLAG} '{path}' does not exist; pass the results_<task>.json that run_rfp.py wrote")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def as_prefixes(sub_network: SubNetwork) -> SubNetwork:
    """The sub-network that keeps as many heads and neurons per layer, the first ones (a stable sort of each row
    puts its kept units first)."""
    return SubNetwork(sub_network.head_mask.sort(dim=1, descending=True, stable=True).values,
                      sub_network.ffn_mask.sort(dim=1, descending=True, stable=True).values)


def rfp_seeds(path: str | None, task_name: str | None, model_config, nas_settings: dict) -> list[Seed]:
    """RFP's sub-networks in the results file at `path` (by budget, as run_rfp.py lists them), mapped onto the
    super-network's units; refused in one line if the file is not RFP's or pruned another task or model shape."""
    if path is None:
        return []
    results = load_results(path)
    if results.get("method") != RFP_METHOD:
        raise UsageError(f"{FLAG} '{path}' is not a results file of run_rfp.py (method: {results.get('method')}); "
                         "pass the results_<task>.json that run_rfp.py wrote")
    if results["task_name"] != task_name:
        raise UsageError(f"{FLAG} '{path}' pruned --task_name {results['task_name']} but this search is for "
                         f"{task_name}; pass run_rfp.py's results for {task_name}")
    shape = ModelShape.of(model_config)
    reordered = nas_settings.get("reorder_units") == "importance"
    seeds = []
    for index, point in enumerate(results["pareto_set"]):
        sub_network = SubNetwork.from_json_dict(point["sub_network"])
        pruned_shape = ModelShape(sub_network.num_layers, sub_network.head_mask.shape[1],
                                  sub_network.ffn_mask.shape[1])
        if pruned_shape != shape:
            raise UsageError(f"{FLAG} '{path}' pruned a model of {pruned_shape} but the super-network has {shape}; "
                             "pass run_rfp.py's results for a model fine-tuned from the super-network's")
        seeds.append(Seed(as_prefixes(sub_network) if reordered else sub_network,
                          {"method": RFP_METHOD, "budget": point["budget"], "pareto_index": index}))
    return seeds
