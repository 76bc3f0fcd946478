"""Stage 2: multi-objective search for the Pareto set of sub-networks of a trained super-network.

Loads the checkpoint once, then asks a searcher for sub-network configs (first the search space's
initial design: the largest, the smallest and the mid-size sub-network) and scores each with one
gradient-free pass over the validation split (error = 1 - the task's main metric) and its
parameter count relative to the super-network. Writes every evaluation, the Pareto set with the
test metric of each Pareto-optimal sub-network, and the Pareto sub-networks as JSON masks. With
--task_name lm the error is the validation loss relative to uniform guessing (language_modeling.py).

    python run_offline_search.py --model_name_or_path bert-base-cased --task_name rte \
        --checkpoint_dir_model ./supernet_model_checkpoint --search_space small \
        --search_strategy local_search --num_samples 500 --output_dir ./results_nas
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import set_seed

from nas_llm.common.arguments import (
    CostArguments,
    ModelArguments,
    NASArguments,
    check_choice,
    check_positive,
    parse_arguments,
)
from nas_llm.common.errors import UsageError, exit_on_usage_error
from nas_llm.common.flags import SEARCH_STRATEGIES
from nas_llm.common.io_utils import tensorboard_writer
from nas_llm.common.memory import bound_kernel_cache
from nas_llm.common.precision import autocast_for, default_device
from nas_llm.data.data import DataArguments, absolute_data_flags, make_dataloader
from nas_llm.data.lm_data import LMArguments, absolute_lm_flags, evaluation_splits
from nas_llm.model.cost import CostMeter, check_cost_seq_len
from nas_llm.model.models import load_supernet, resolve_model_name
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import runner_for
from nas_llm.model.sub_network import SubNetwork
from nas_llm.search.multi_fidelity import MultiFidelityArguments, ValidationRace, check_task
from nas_llm.search.offline import OfflineSearch
from nas_llm.search.results import finished_results, previous_evaluations, results_file_name, write_results
from nas_llm.search.searchers import DEFAULT_POPULATION_SIZE, make_searcher
from nas_llm.training.evaluation import evaluate, predict

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
    objective: str = field(
        default="params",
        metadata={"help": f"Second objective next to the validation error, relative to the unpruned network: "
                  f"{', '.join(COST_OBJECTIVES)} (latency is measured for every sub-network, so it is slower)."},
    )
    bf16: bool = field(
        default=False,
        metadata={"help": "Score sub-networks under bf16 autocast (CUDA, or CPUs with bf16 support; elsewhere it "
                  "runs, slowly); the costs are still those of the fp32 network."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh even if --output_dir holds an interrupted run (by default it is resumed "
                  "when its settings match)."},
    )

    def __post_init__(self) -> None:
        check_choice("search_strategy", self.search_strategy, SEARCH_STRATEGIES)
        check_choice("objective", self.objective, COST_OBJECTIVES)
        check_positive(
self, "num_samples", "population_size", "per_device_eval_batch_size")


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
    return fidelity_args.settings() | ({"bf16": True} if search_args.bf16 else {}) | {
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


def main(argv: list[str] | None = None) -> None:
    model_args, data_args, lm_args, nas_args, search_args, cost_args, fidelity_args = parse_arguments(
        (ModelArguments, DataArguments, LMArguments, NASArguments, SearchArguments, CostArguments,
         MultiFidelityArguments), argv
    )
    if fidelity_args.multi_fidelity:
        check_task(data_args.task_name)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    output_dir = Path(search_args.output_dir)
    results_path = output_dir / results_file_name(data_args.task_name)
    settings = results_settings(model_args, data_args, lm_args, nas_args, search_args, cost_args, fidelity_args)
    if finished_results(output_dir, results_path, settings, search_args.overwrite_output_dir):
        logger.info(
            "%s already holds this search's %d evaluations and results; nothing to do "
            "(--overwrite_output_dir True runs it again)", results_path, search_args.num_samples,
        )
        return
    start_time = time.time()
    bound_kernel_cache()
    set_seed(search_args.seed)
    device = default_device()

    model, tokenizer, nas_settings = load_supernet(search_args.checkpoint_dir_model, lm_args.torch_dtype)
    check_against_checkpoint(nas_settings, model_args, data_args, nas_args)
    check_cost_seq_len(cost_args, model.config)
    model.to(device).eval()
    model_loading_time = time.time() - start_time

    tokenized, metrics_key = evaluation_splits(data_args, lm_args, tokenizer, model.config, ("validation", "test"))
    loaders = {
        name: make_dataloader(tokenized[name], tokenizer, search_args.per_device_eval_batch_size, False, 0)
        for name in ("validation", "test")
    }
    data_loading_time = time.time() - start_time - model_loading_time

    search_space = make_search_space(nas_args.search_space, model.config)
    run_as = runner_for(nas_args.sub_network_execution)
    searcher = make_searcher(
        search_args.search_strategy, search_space.config_space, ["error", search_args.objective], search_args.seed,
        points_to_evaluate=search_space.initial_design(), population_size=search_args.population_size,
    )
    autocast = autocast_for(device, False, search_args.bf16)

    def score(split: str, sub_network: SubNetwork | None = None) -> dict[str, float]:
        with autocast():
            return evaluate(model, loaders[split], metrics_key, device, sub_network, run_as)

    racing = ValidationRace(
        fidelity_args, tokenized["validation"], tokenizer, search_args.per_device_eval_batch_size, metrics_key,
        search_args.objective, search_args.seed,
    ) if fidelity_args.multi_fidelity else None

    def race_on_validation(sub_network: SubNetwork, cost: float, records: list[dict],
                           iteration: int) -> tuple[dict[str, float], dict]:
        """--multi_fidelity True: the validation metrics on the shares scored, and the record's fidelity fields."""

        def predict_on(loader) -> tuple[np.ndarray, np.ndarray]:
            with autocast():
                return predict(model, loader, device, sub_network, run_as)

        return racing.score(predict_on, cost, records, iteration)

    search = OfflineSearch(
        searcher, search_space, search_args.objective, score,
        CostMeter(model, run_as, cost_args, search_space.largest()),
        race_on_validation if racing is not None else None,
    )
    log, records = previous_evaluations(
        output_dir, run_settings(data_args, lm_args, nas_args, search_args, cost_args, fidelity_args),
        search_args.overwrite_output_dir,
    )
    records = records[: search_args.num_samples]
    search.replay(records, output_dir)  # the searcher proposes the same configs again
    if records:
        logger.info("Resumed %d evaluations from %s", len(records), log.path)
        start_time -= records[-1]["runtime_s"]  # runtime_s counts the earlier sessions' time too
    writer = tensorboard_writer(nas_args.run_log_dir("search", search_args.output_dir))
    records = search.run(records, search_args.num_samples, log, start_time, writer,
                         f"{search_args.search_strategy} search")
    pareto, pareto_set = search.pareto_set(records)
    unpruned = search.cost_meter.unpruned | {"validation": search.score("validation"), "test": search.score("test")}
    write_results(results_path, {
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
        "evaluations": [{key: value for key, value in r.items() if key != "sub_network_masks"} for r in records],
        "pareto_indices": pareto,
        "pareto_set": pareto_set,
        "model_loading_time_s": model_loading_time,
        "data_loading_time_s": data_loading_time,
        "runtime_s": time.time() - start_time,
    })
    writer.close()
    logger.info("Unpruned: validation error %.4f, test %s", unpruned["validation"]["error"], unpruned["test"])
    for point in pareto_set:
        logger.info(
            "Pareto: %s %.3f (%d parameters), validation error %.4f, test %s",
            search_args.objective, point[search_args.objective], point["num_parameters"], point["error"],
            point["test"],
        )


if __name__ == "__main__":
    exit_on_usage_error(main)
