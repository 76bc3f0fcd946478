"""Stage 1: fine-tune a pre-trained model as a super-network whose sub-networks share its weights.

Every step trains the sub-networks a sampling strategy plans (e.g. one_shot: the full network,
the smallest and k random sub-networks, the latter distilled from the former), accumulating their
gradients into one optimizer step. Writes a save_pretrained checkpoint that run_offline_search.py
loads, TensorBoard scalars and a results JSON.

    python train_supernet.py --model_name_or_path bert-base-cased --task_name rte \
        --sampling_strategy one_shot --search_space small --output_dir ./supernet_model_checkpoint

With --task_name lm a decoder trains as a causal LM on text packed into blocks (lm_data.py), with the
next-token loss and token-level distillation (language_modeling.py); --sampling_strategy none trains nothing
and writes the pre-trained model as the checkpoint to search.

With --use_accelerate True the same loop runs data-parallel in the processes `accelerate launch`
starts (DDP or DeepSpeed; see distributed.py): each trains on its shard of every epoch, only the
main process logs and writes checkpoints.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from transformers import set_seed

from nas_llm.common.arguments import ModelArguments, NASArguments, SupernetArguments, TrainingArguments, parse_arguments
from nas_llm.common.errors import exit_on_usage_error
from nas_llm.common.memory import bound_kernel_cache
from nas_llm.data.data import DataArguments
from nas_llm.data.lm_data import LMArguments, load_examples, task_metrics_key, task_splits
from nas_llm.model.models import load_tokenizer, resolve_model_name
from nas_llm.model.search_spaces import make_search_space
from nas_llm.model.slicing import runner_for
from nas_llm.training.distributed import make_runtime, report_from_main_process_only
from nas_llm.training.reorder import unit_scores
from nas_llm.training.supernet import (
    checkpoint_to_resume,
    load_student_and_teacher,
    make_loaders,
    make_strategy,
    objective_for,
    parameters_of_largest_and_smallest,
    prepare_training,
    reorder_if_asked,
    supernet_settings,
)

if TYPE_CHECKING:  # for annotations only: importing it takes seconds that `--help` need not wait
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> PreTrainedModel:
    """Train and save the super-network; returns it (unwrapped), for callers in Python such as tests."""
    model_args, data_args, lm_args, nas_args, supernet_args, training_args = parse_arguments(
        (ModelArguments, DataArguments, LMArguments, NASArguments, SupernetArguments, TrainingArguments), argv
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    start_time = time.time()
    bound_kernel_cache()
    runtime = make_runtime(
        training_args.use_accelerate, training_args.fp16, training_args.bf16, nas_args.sub_network_execution,
        resume=training_args.resume_from_checkpoint is not None,
    )
    report_from_main_process_only(runtime.is_main_process)
    set_seed(training_args.seed)

    with runtime.main_process_first():  # None for lm: its text is loaded once the model is (blocks vs positions)
        examples = load_examples(data_args)
    model_name = resolve_model_name(model_args.model_name_or_path)
    nas_settings = supernet_settings(model_name, data_args.task_name, nas_args, supernet_args, training_args)
    resume_from = checkpoint_to_resume(training_args, nas_settings)
    tokenizer = load_tokenizer(str(resume_from or model_name), model_args.cache_dir)
    model, teacher, label_scale = load_student_and_teacher(
        model_args, lm_args, supernet_args, data_args.task_name, model_name, resume_from, examples, tokenizer,
        runtime.device,
    )
    with runtime.main_process_first():
        tokenized = task_splits(data_args, lm_args, tokenizer, model.config, examples)
    train_loader, eval_loaders = make_loaders(tokenized, tokenizer, training_args)
    objective = objective_for(data_args.task_name)
    importance = reorder_if_asked(
        model, tokenized["train"], tokenizer, supernet_args, training_args, resume_from is not None, label_scale,
        objective,
    )
    scores = unit_scores(importance, training_args.output_dir)
    search_space = make_search_space(nas_args.search_space, model.config, scores)
    strategy = make_strategy(supernet_args, search_space, model)
    num_parameters = parameters_of_largest_and_smallest(model, search_space)

    training = prepare_training(
        runtime, model, train_loader, training_args, supernet_args,
        log_dir=nas_args.run_log_dir("train", training_args.output_dir), eval_loaders=eval_loaders, strategy=strategy,
        search_space=search_space, objective=objective, label_scale=label_scale, teacher=teacher,
        run_as=runner_for(nas_args.sub_network_execution), metrics_key=task_metrics_key(data_args.task_name, examples),
        tokenizer=tokenizer, nas_settings=nas_settings, start_time=start_time,
    )
    training.resume(resume_from)
    training.report_start(importance, model_name, len(tokenized["train"]))

    training.model.train()
    for epoch in range(training.start_epoch, training.num_epochs):
        training.train_epoch(epoch)
        training.end_epoch(epoch)
    training.save_final()
    results = training.results(num_parameters, len(tokenized["train"]))
    training.write_results(results)
    logger.info("Full network: validation %s, test %s", results["validation"], results["test"])
    runtime.end()
    return training.unwrapped


if __name__ == "__main__":
    exit_on_usage_error(main)
