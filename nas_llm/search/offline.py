"""The offline search loop: a searcher proposes sub-networks, the super-network scores them without training.

Each evaluation is one gradient-free pass over the validation split (error = 1 - the task's main metric)
plus its costs relative to the unpruned network, logged at once to evaluations.jsonl; a resumed run replays
the log into the searcher, which must propose the same configs again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nas_llm.common.errors import UsageError
from nas_llm.common.io_utils import JsonLinesLog
from nas_llm.common.memory import release_freed_memory
from nas_llm.model.cost import CostMeter
from nas_llm.model.search_spaces import SearchSpace
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.results import pareto_front
from nas_llm.search.searchers import Searcher

Scorer = Callable[[str, SubNetwork | None], dict[str, float]]  # (split, sub-network or None: unpruned) -> metrics
# (sub-network, its relative cost, the records so far, iteration) -> validation metrics, the record's fidelity fields
ValidationScorer = Callable[[SubNetwork, float, list[dict], int], tuple[dict[str, float], dict]]


@dataclass
class OfflineSearch:
    """One search: the searcher over a search space, minimising the validation error and `objective`."""

    searcher: Searcher
    search_space: SearchSpace
    objective: str  # the cost objective: params, flops, latency or memory
    score: Scorer
    cost_meter: CostMeter
    # Scores a proposal on the validation split; None: `score` on the whole split (see multi_fidelity.py for the
    # racing one, which needs the proposal's cost and the fully scored records to stop it early).
    score_validation: ValidationScorer | None = None

    @property
    def objectives(self) -> list[str]:
        return ["error", self.objective]

    @property
    def with_latency(self) -> bool:
        return self.objective == "latency"

    def replay(self, records: list[dict], output_dir: Path) -> None:
        """Tell the searcher a resumed run's evaluations; it must propose the same configs again."""
        for record in records:
            config = self.searcher.ask()
            if self.search_space.to_sub_network(config) != SubNetwork.from_compact(record["sub_network_masks"]):
                raise UsageError(
                    f"cannot resume {output_dir}: the searcher now proposes a different config at iteration "
                    f"{record['iteration']} (were the code or libraries changed?); pass --overwrite_output_dir True"
                )
            self.searcher.tell(config, {name: record[name] for name in self.objectives})

    def evaluate(self, iteration: int, start_time: float, records: list[dict]) -> dict[str, Any]:
        """Ask for one sub-network, measure its costs, score it, tell the searcher; the evaluation's record.

        The costs come first: a multi-fidelity score compares the proposal's cost with the earlier `records`.
        """
        config = self.searcher.ask()
        sub_network = self.search_space.to_sub_network(config)
        costs = self.cost_meter.measure(sub_network, self.with_latency)
        relative_costs = self.cost_meter.relative(costs)
        if self.score_validation is None:
            metrics, fidelity = self.score("validation", sub_network), {}
        else:
            metrics, fidelity = self.score_validation(sub_network, relative_costs[self.objective], records, iteration)
        record = {
            "iteration": iteration,
            "error": metrics["error"],
            "validation": metrics,
            **fidelity,
            **relative_costs,
            **costs,
            "sub_network": sub_network.summary(),
            "sub_network_masks": sub_network.to_compact(),
            "runtime_s": time.time() - start_time,
        }
        if self.search_space.name != "large":  # one bit per neuron: the masks say the same, far shorter
            record["config"] = config
        self.searcher.tell(config, {name: record[name] for name in self.objectives})
        return record

    def run(self, records: list[dict], num_samples: int, log: JsonLinesLog, start_time: float, writer,
            desc: str) -> list[dict]:
        """Evaluate until `num_samples` records exist, logging each at once; returns all records."""
        records = list(records)
        progress = tqdm(range(len(records), num_samples), initial=len(records), total=num_samples, desc=desc)
        for iteration in progress:
            record = self.evaluate(iteration, start_time, records)
            log.append(record)
            release_freed_memory()  # sliced shapes differ per sample: keep the heap from growing
            records.append(record)
            for name in ("error", self.objective, "runtime_s"):
                writer.add_scalar(f"search/{name}", record[name], iteration)
        return records

    def pareto_set(self, records: list[dict]) -> tuple[list[int], list[dict]]:
        """The Pareto-optimal records (cheapest first; fully scored ones only) and, for each, its costs and test
        metrics."""
        pareto = pareto_front(records, self.objectives, order_by=self.objective)
        points = []
        for index in tqdm(pareto, desc="test metric of the Pareto set"):
            sub_network = SubNetwork.from_compact(records[index]["sub_network_masks"])
            # Every Pareto point gets a latency; one the search ranked by keeps the measurement it was ranked on.
            costs = self.cost_meter.measure(sub_network, with_latency=not self.with_latency)
            costs |= {name: records[index][name] for name in ("latency_ms", "latency_iqr_ms") if self.with_latency}
            points.append({
                "iteration": index,
                "error": records[index]["error"],
                **self.cost_meter.relative(costs),
                **costs,
                "test": self.score("test", sub_network),
                "sub_network": sub_network.to_json_dict(),
            })
        return pareto, points
