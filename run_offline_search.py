"""Stage 2: multi-objective search for the Pareto set of sub-networks of a trained super-network.

Loads the checkpoint once, then asks a searcher for sub-network configs (first the search space's
initial design: the largest, the smallest and the mid-size sub-network; before them, with
--initial_sub_networks, the sub-networks run_rfp.py found per budget) and scores each with one
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
import time
from pathlib import Path

from transformers import set_seed

from nas_llm.common.arguments import CostArguments, ModelArguments, NASArguments, parse_arguments
from nas_llm.common.errors import exit_on_usage_error
from nas_llm.common.io_utils import tensorboard_writer
from nas_llm.common.memory import bound_kernel_cache
from nas_llm.common.precision import bf16_scoring, default_device
from nas_llm.data.data import DataArguments
from nas_llm.data.lm_data import LMArguments, evaluation_splits
from nas_llm.model.cost import CostMeter
from nas_llm.model.slicing import runner_for
from nas_llm.search.multi_fidelity import MultiFidelityArguments
from nas_llm.search.offline import (
    OfflineSearch,
    SearchArguments,
    SupernetScorer,
    check_search_flags,
    checkpoint_search_space,
    load_checked_supernet,
    log_results,
    results_settings,
    run_settings,
    search_loaders,
    search_results,
    validation_scorer,
)
from nas_llm.search.results import finished_results, results_file_name, write_results
from nas_llm.search.searchers import make_searcher
from nas_llm.search.seeding import rfp_seeds

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    model_args, data_args, lm_args, nas_args, search_args, cost_args, fidelity_args = parse_arguments(
        (ModelArguments, DataArguments, LMArguments, NASArguments, SearchArguments, CostArguments,
         MultiFidelityArguments), argv
    )
    check_search_flags(search_args, fidelity_args, data_args.task_name)
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

    model, tokenizer, nas_settings = load_checked_supernet(
        model_args, data_args, lm_args, nas_args, search_args, cost_args, device
    )
    model_loading_time = time.time() - start_time

    tokenized, metrics_key = evaluation_splits(data_args, lm_args, tokenizer, model.config, ("validation", "test"))
    loaders = search_loaders(tokenized, tokenizer, search_args)
    data_loading_time = time.time() - start_time - model_loading_time

    search_space = checkpoint_search_space(nas_args.search_space, model, search_args.checkpoint_dir_model)
    run_as = runner_for(nas_args.sub_network_execution)
    searcher = make_searcher(
        search_args.search_strategy, search_space.config_space, ["error", search_args.objective], search_args.seed,
        points_to_evaluate=search_space.initial_design(), population_size=search_args.population_size,
    )
    scorer = SupernetScorer(model, loaders, metrics_key, device, run_as, bf16_scoring(model, device, search_args.bf16))
    search = OfflineSearch(
        searcher, search_space, search_args.objective, scorer.score,
        CostMeter(model, run_as, cost_args, search_space.largest()),
        validation_scorer(fidelity_args, scorer, tokenized["validation"], tokenizer, search_args),
        rfp_seeds(search_args.initial_sub_networks, data_args.task_name, model.config, nas_settings),
    )
    log, records = search.resume(
        output_dir, run_settings(data_args, lm_args, nas_args, search_args, cost_args, fidelity_args),
        search_args.overwrite_output_dir, search_args.num_samples,
    )
    if records:
        start_time -= records[-1]["runtime_s"]  # runtime_s counts the earlier sessions' time too
    writer = tensorboard_writer(nas_args.run_log_dir("search", search_args.output_dir))
    records = search.run(records, search_args.num_samples, log, start_time, writer,
                         f"{search_args.search_strategy} search")
    results = search_results(
        search, records, data_args, nas_args, search_args, cost_args, nas_settings, settings, device,
        (model_loading_time, data_loading_time), start_time,
        scorer.recorded_validation() if search_args.record_validation_predictions else None,
    )
    write_results(results_path, results)
    writer.close()
    log_results(results, search_args.objective)


if __name__ == "__main__":
    exit_on_usage_error(main)
