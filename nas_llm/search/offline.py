"""The offline search loop: a searcher proposes sub-networks, the super-network scores them without training.

Each evaluation is one gradient-free pass over the validation split (error = 1 - the task's main metric)
plus its costs relative to the unpruned network, logged at once to evaluations.jsonl; a resumed run replays
the log into the searcher, which must propose the same configs again. Also the search's flags, the settings a
resumed or finished run must match, scoring with the loaded super-network, and the results record it writes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from nas_llm.common.arguments import CostArguments, ModelArguments, NASArguments, check_choice, check_positive
from nas_llm.common.errors import UsageError
from nas_llm.common.flags import SEARCH_STRATEGIES
from nas_llm.common.io_utils import JsonLinesLog
from nas_llm.common.memory import release_freed_memory
from nas_llm.data.data import LM_TASK, DataArguments, absolute_data_flags, evaluation_loaders
from nas_llm.data.lm_data import LMArguments, absolute_lm_flags
from nas_llm.data.metrics import metrics_with_error
from nas_llm.model.cost import CostMeter, check_cost_seq_len
from nas_llm.model.models import load_supernet, resolve_model_name
from nas_llm.model.search_spaces import SearchSpace, make_search_space
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.multi_fidelity import MultiFidelityArguments, ValidationRace, check_task
from nas_llm.search.results import LOG_ONLY_KEYS, pareto_front, previous_evaluations
from nas_llm.search.searchers import DEFAULT_POPULATION_SIZE, Searcher
from nas_llm.search.seeding import Seed, seed_settings
from nas_llm.training.evaluation import evaluate, predict
from nas_llm.training.objective import SubNetworkRunner
from nas_llm.training.reorder import unit_scores

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

COST_OBJECTIVES = ("params", "flops", "latency", "memory")


@dataclass
class SearchArguments:
    checkpoint_dir_model: str = field(
        default=os.environ.get("SM_CHANNEL_MODEL", "./supernet_model_checkpoint"),
        metadata={"help": "Super-network checkpoint: the --output_dir of train_supernet.py (on SageMaker, the "
                  "'model' input channel)."},
    )
    search_strategy: str = field(
        default="random_search", metadata={"help": f"Searcher, one of: {', '.join(SEARCH_STRATEGIES)}."}
    )
    num_samples: int = field(default=500, metadata={"help": "Sub-networks to evaluate."})
    population_size: int = field(
        default=DEFAULT_POPULATION_SIZE,
        metadata={"help": "Population of morea (whose tournament samples half of it) and nsga2; the original's is 10."},
    )
    output_dir: str = field(default="./results_nas", metadata={"help": "Where the results are written."})
    seed: int = field(default=42, metadata={"help": "Seed of the searcher."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size."})
    least_padding: bool = field(
        default=False,
        metadata={"help": "Cut the length-sorted evaluation examples into batches of at most "
                  "--per_device_eval_batch_size where the padded tokens (plus a fixed cost per batch) are fewest, "
                  "instead of batches of exactly that size: less work on a CPU where a split's lengths vary widely "
                  "(the quickstart's SST-2 validation split: 0.67x the padded tokens at 64). Errors change only by "
                  "float rounding."},
    )
    objective: str = field(
        default="params",
        metadata={"help": f"Second objective next to the validation error, relative to the unpruned network: "
                  f"{', '.join(COST_OBJECTIVES)} (latency is measured for every sub-network, so it is slower)."},
    )
    bf16: bool = field(
        default=False,
        metadata={"help": "Score sub-networks under bf16 autocast (CUDA, or CPUs with AVX512-BF16 or AMX; on other "
                  "CPUs it is emulated, several times slower than fp32, and a warning says so); the costs are still "
                  "those of the fp32 network."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh even if --output_dir holds an interrupted run (by default it is resumed "
                  "when its settings match)."},
    )
    record_validation_predictions: bool = field(
        default=False,
        metadata={"help": "Keep every sub-network's predictions on the validation split in evaluations.jsonl and the "
                  "split's labels in the results (`recorded_validation`, in the same order), so that prune.py "
                  "--ties_within_noise True can compare sub-networks example by example. Exact searches only: a "
                  "--multi_fidelity True search keeps its fully scored sub-networks' predictions already."},
    )
    initial_sub_networks: str | None = field(
        default=None,
        metadata={"help": "A results_<task>.json of run_rfp.py: its sub-networks (one per budget) are evaluated "
                  "first, with the super-network's weights, on top of --num_samples; their records say "
                  "'seeded_from' (method, budget) and join the Pareto set like any other. The searcher is not "
                  "told them (it learns from its own proposals only). On a super-network stored in importance "
                  "order (--reorder_units importance) RFP's per-layer counts become prefixes of the stored units."},
    )

    def __post_init__(self) -> None:
        check_choice("search_strategy", self.search_strategy, SEARCH_STRATEGIES)
        check_choice("objective", self.objective, COST_OBJECTIVES)
        check_positive(self, "num_samples", "population_size", "per_device_eval_batch_size")


def check_search_flags(search_args: SearchArguments, fidelity_args: MultiFidelityArguments, task_name: str | None
                       ) -> None:
    """--multi_fidelity True needs a task it can race on; --record_validation_predictions True an exact search of a
    task scored on predictions."""
    if fidelity_args.multi_fidelity:
        check_task(task_name)
    if not search_args.record_validation_predictions:
        return
    if fidelity_args.multi_fidelity:
        raise UsageError("--record_validation_predictions True is for an exact search: a --multi_fidelity True "
                         "search keeps its fully scored sub-networks' predictions in the race's own order; leave "
                         "one of the two out")
    if task_name == LM_TASK:
        raise UsageError("--record_validation_predictions True needs a task scored on predictions; --task_name lm "
                         "is scored by its loss")


def check_against_checkpoint(nas_settings: dict, model_args: ModelArguments, data_args, nas_args) -> None:
    """Refuse to search a checkpoint trained for another model, task or search space."""
    expected = {
        "model_name_or_path": resolve_model_name(model_args.model_name_or_path),
        "task_name": data_args.task_name,
        "search_space": nas_args.search_space,
    }
    for name, value in expected.items():
        trained = nas_settings.get(name)
        if trained != value:
            raise UsageError(
                f"the checkpoint was trained with --{name} {trained} but the search asks for --{name} {value}; "
                f"pass --{name} {trained} or train a super-network for {value}"
            )


def run_settings(
    data_args: DataArguments,
    lm_args: LMArguments,
    nas_args: NASArguments,
    search_args: SearchArguments,
    cost_args: CostArguments,
    fidelity_args: MultiFidelityArguments,
) -> dict:
    """What must match for a run in --output_dir to be resumed (num_samples may grow).

    Options added since the results schema was fixed appear only when set, so default runs keep its settings.
    """
    return fidelity_args.settings() | ({"bf16": True} if search_args.bf16 else {}) | (
        {"record_validation_predictions": True} if search_args.record_validation_predictions else {}) | (
        {"least_padding": True} if search_args.least_padding else {}) | seed_settings(
        search_args.initial_sub_networks) | {
        "dataset_name": lm_args.dataset_name,
        "dataset_config_name": lm_args.dataset_config_name,
        "block_size": lm_args.block_size,
        "checkpoint_dir_model": str(Path(search_args.checkpoint_dir_model).resolve()),
        "task_name": data_args.task_name,
        "data_dir": data_args.data_dir,
        "train_file": data_args.train_file,
        "dataset_seed": data_args.dataset_seed,
        "validation_fraction": data_args.validation_fraction,
        "max_eval_samples": data_args.max_eval_samples,
        "max_seq_length": data_args.max_seq_length,
        "search_space": nas_args.search_space,
        "search_strategy": search_args.search_strategy,
        "population_size": search_args.population_size,
        "seed": search_args.seed,
        "objective": search_args.objective,
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
    }


def results_settings(model_args: ModelArguments, data_args: DataArguments, lm_args: LMArguments,
                     nas_args: NASArguments, search_args: SearchArguments, cost_args: CostArguments,
                     fidelity_args: MultiFidelityArguments) -> dict:
    """Everything the results file depends on; a rerun with the same settings has nothing left to do."""
    return run_settings(data_args, lm_args, nas_args, search_args, cost_args, fidelity_args) | {
        "model_name_or_path": resolve_model_name(model_args.model_name_or_path),
        "num_samples": search_args.num_samples,
        "latency_repeats": cost_args.latency_repeats,
        "sub_network_execution": nas_args.sub_network_execution,
        "data": absolute_data_flags(data_args) | absolute_lm_flags(lm_args),  # select_and_extract.py's defaults
    }


Scorer = Callable[[str, SubNetwork | None], dict[str, float]]  # (split, sub-network or None: unpruned) -> metrics
# (sub-network, its relative cost, the records so far, iteration) -> validation metrics, the record's fidelity
# fields (a stopped proposal's replace `error` with the estimate of its error on the whole split, see multi_fidelity.py)
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
    seeds: list[Seed] = field(default_factory=list)  # evaluated first, not told to the searcher (seeding.py)

    @property
    def objectives(self) -> list[str]:
        return ["error", self.objective]

    @property
    def with_latency(self) -> bool:
        return self.objective == "latency"

    def replay(self, records: list[dict], output_dir: Path) -> None:
        """Tell the searcher a resumed run's evaluations; it must propose the same configs again (it never
        proposed the seeded ones)."""
        for record in records:
            if "seeded_from" in record:
                continue
            config = self.searcher.ask()
            if self.search_space.to_sub_network(config) != SubNetwork.from_compact(record["sub_network_masks"]):
                raise UsageError(
                    f"cannot resume {output_dir}: the searcher now proposes a different config at iteration "
                    f"{record['iteration']} (were the code or libraries changed?); pass --overwrite_output_dir True"
                )
            self.searcher.tell(config, {name: record[name] for name in self.objectives})

    def resume(self, output_dir: Path, settings: dict, overwrite: bool, num_samples: int
               ) -> tuple[JsonLinesLog, list[dict]]:
        """The evaluations log of --output_dir and the earlier run's first records (the seeds and `num_samples`
        proposals), replayed into the searcher (none if `overwrite` or a fresh directory; an earlier run with other
        `settings` is refused)."""
        log, records = previous_evaluations(output_dir, settings, overwrite)
        records = records[:len(self.seeds) + num_samples]
        self.replay(records, output_dir)  # the searcher proposes the same configs again
        if records:
            logger.info("Resumed %d evaluations from %s", len(records), log.path)
        return log, records

    def evaluate(self, iteration: int, start_time: float, records: list[dict]) -> dict[str, Any]:
        """The record of evaluation `iteration`: the seeds first, then a sub-network asked of the searcher and
        told back."""
        if iteration < len(self.seeds):
            seed = self.seeds[iteration]
            record = self.evaluate_sub_network(seed.sub_network, iteration, start_time, records)
            return record | {"seeded_from": seed.origin}
        config = self.searcher.ask()
        record = self.evaluate_sub_network(self.search_space.to_sub_network(config), iteration, start_time, records)
        if self.search_space.name != "large":  # one bit per neuron: the masks say the same, far shorter
            record["config"] = config
        self.searcher.tell(config, {name: record[name] for name in self.objectives})
        return record

    def evaluate_sub_network(
        self, sub_network: SubNetwork, iteration: int, start_time: float, records: list[dict]
    ) -> dict[str, Any]:
        """Measure a sub-network's costs, then score it; its record.

        The costs come first: a multi-fidelity score compares the proposal's cost with the earlier `records`.
        """
        costs = self.cost_meter.measure(sub_network, self.with_latency)
        relative_costs = self.cost_meter.relative(costs)
        if self.score_validation is None:
            metrics, fidelity = self.score("validation", sub_network), {}
        else:
            metrics, fidelity = self.score_validation(sub_network, relative_costs[self.objective], records, iteration)
        return {
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

    def run(self, records: list[dict], num_samples: int, log: JsonLinesLog, start_time: float, writer,
            desc: str) -> list[dict]:
        """Evaluate until the seeds and `num_samples` proposals have records, logging each at once; returns all
        records."""
        records = list(records)
        total = len(self.seeds) + num_samples
        progress = tqdm(range(len(records), total), initial=len(records), total=total, desc=desc)
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


@dataclass
class SupernetScorer:
    """Scores sub-networks of the loaded super-network (under `autocast`, e.g. bf16 with --bf16 True)."""

    model: nn.Module
    loaders: dict[str, DataLoader]  # validation and test
    metrics_key: str
    device: torch.device
    run_as: SubNetworkRunner
    autocast: Callable[[], AbstractContextManager]

    def score(self, split: str, sub_network: SubNetwork | None = None) -> dict[str, float]:
        """The task's metrics of `sub_network` (None: the unpruned network) on `split`."""
        with self.autocast():
            return evaluate(self.model, self.loaders[split], self.metrics_key, self.device, sub_network, self.run_as)

    def validation_with_predictions(self, sub_network: SubNetwork, cost: float, records: list[dict],
                                    iteration: int) -> tuple[dict[str, float], dict]:
        """--record_validation_predictions True: the metrics on the whole validation split, as `score` computes
        them, and the predictions they come from (the record's `validation_predictions`)."""
        predictions, labels = self.predictions(sub_network, self.loaders["validation"])
        metrics = metrics_with_error(self.metrics_key, predictions, labels)
        return metrics, {"validation_predictions": predictions.tolist()}

    def recorded_validation(self) -> dict:
        """The validation split's labels in the order of the loader, which the recorded predictions follow, and the
        task whose metrics score them (the results' `recorded_validation`)."""
        labels = torch.cat([batch["labels"] for batch in self.loaders["validation"]])
        return {"task": self.metrics_key, "labels": labels.tolist()}

    def predictions(self, sub_network: SubNetwork, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """The predictions and labels of `sub_network` on `loader` (a share of the validation split)."""
        with self.autocast():
            return predict(self.model, loader, self.device, sub_network, self.run_as)

    def race_on_validation(self, racing: ValidationRace, sub_network: SubNetwork, cost: float, records: list[dict],
                           iteration: int) -> tuple[dict[str, float], dict]:
        """--multi_fidelity True: the validation metrics on the shares scored, and the record's fidelity fields."""
        return racing.score(lambda loader: self.predictions(sub_network, loader), sub_network.to_compact(), cost,
                            records, iteration)


def checkpoint_search_space(name: str, model: PreTrainedModel, checkpoint_dir: str) -> SearchSpace:
    """The space to search over the super-network's dimensions; the `importance` space also reads the unit
    importance that the checkpoint recorded when it was reordered."""
    return make_search_space(name, model.config, unit_scores(None, checkpoint_dir))


def load_checked_supernet(
    model_args: ModelArguments, data_args: DataArguments, lm_args: LMArguments, nas_args: NASArguments,
    search_args: SearchArguments, cost_args: CostArguments, device: torch.device,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """The super-network to search, in eval mode on `device`, its tokenizer and the settings it was trained with;
    refused if trained for another model, task or search space, or too short for --cost_seq_len."""
    model, tokenizer, nas_settings = load_supernet(search_args.checkpoint_dir_model, lm_args.torch_dtype)
    check_against_checkpoint(nas_settings, model_args, data_args, nas_args)
    check_cost_seq_len(cost_args, model.config)
    model.to(device).eval()
    return model, tokenizer, nas_settings


def search_loaders(tokenized: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                   search_args: SearchArguments) -> dict[str, DataLoader]:
    """The validation and test loaders a search scores on, in its batch size (cut by --least_padding)."""
    return evaluation_loaders(tokenized, tokenizer, search_args.per_device_eval_batch_size,
                              least_padding=search_args.least_padding)


def validation_scorer(
    fidelity_args: MultiFidelityArguments, scorer: SupernetScorer, validation: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase, search_args: SearchArguments,
) -> ValidationScorer | None:
    """--multi_fidelity True: the race over shares of `validation` (multi_fidelity.py); --record_validation_predictions
    True: the whole split, keeping the predictions; None: the whole split."""
    if search_args.record_validation_predictions:
        return scorer.validation_with_predictions
    if not fidelity_args.multi_fidelity:
        return None
    racing = ValidationRace(
        fidelity_args, validation, tokenizer, search_args.per_device_eval_batch_size, scorer.metrics_key,
        search_args.objective, search_args.seed, search_args.least_padding,
    )
    return partial(scorer.race_on_validation, racing)


def search_results(
    search: OfflineSearch, records: list[dict], data_args: DataArguments, nas_args: NASArguments,
    search_args: SearchArguments, cost_args: CostArguments, nas_settings: dict, settings: dict, device: torch.device,
    loading_times_s: tuple[float, float], start_time: float, recorded_validation: dict | None = None,
) -> dict[str, Any]:
    """The results file (schema: results.py): the run, the unpruned network, every evaluation and the Pareto set
    with its test metrics; `loading_times_s` are the model's and the data's; `recorded_validation` the labels that
    the recorded validation predictions follow and the task they are scored as (--record_validation_predictions)."""
    pareto, pareto_set = search.pareto_set(records)
    unpruned = search.cost_meter.unpruned | {"validation": search.score("validation"), "test": search.score("test")}
    return {
        "task_name": data_args.task_name,
        "model_name_or_path": nas_settings.get("model_name_or_path"),
        "checkpoint_dir_model": str(Path(search_args.checkpoint_dir_model).resolve()),  # usable from any directory
        "sampling_strategy": nas_settings.get("sampling_strategy"),
        "search_space": nas_args.search_space,
        "search_strategy": search_args.search_strategy,
        "seed": search_args.seed,
        "num_samples": search_args.num_samples,
        "objectives": search.objectives,
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
        "latency_threads": torch.get_num_threads(),
        "device": str(device),
        "settings": settings,
        "unpruned": unpruned,
        "evaluations": [{key: value for key, value in r.items() if key not in LOG_ONLY_KEYS} for r in records],
        "pareto_indices": pareto,
        "pareto_set": pareto_set,
        "model_loading_time_s": loading_times_s[0],
        "data_loading_time_s": loading_times_s[1],
        "runtime_s": time.time() - start_time,
    } | ({} if recorded_validation is None else {"recorded_validation": recorded_validation})


def log_results(results: dict[str, Any], objective: str) -> None:
    """The unpruned network's scores and each Pareto point's cost and scores."""
    unpruned = results["unpruned"]
    logger.info("Unpruned: validation error %.4f, test %s", unpruned["validation"]["error"], unpruned["test"])
    for point in results["pareto_set"]:
        logger.info(
            "Pareto: %s %.3f (%d parameters), validation error %.4f, test %s",
            objective, point[objective], point["num_parameters"], point["error"], point["test"],
        )
