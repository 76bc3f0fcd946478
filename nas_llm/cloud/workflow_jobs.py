"""The SageMaker jobs of the training and search workflows: the flags a launcher adds and the job of one cell.

The single-job launchers (launch_supernet_training.py, launch_offline_search.py) and their grids
(launch_all_supernet_training.py, launch_all_offline_search.py) build the same jobs from these; torch-free, like
sagemaker_jobs.py.
"""

from __future__ import annotations

import argparse

from nas_llm.cloud.sagemaker_jobs import (
    CHECKPOINT_DIR,
    MODEL_CHANNEL,
    MODEL_CHANNEL_DIR,
    SEARCH_STRATEGY,
    SUPERNET_AXES,
    SUPERNET_DONE_FILE,
    TEACHER_CHANNEL,
    TEACHER_CHANNEL_DIR,
    TENSORBOARD_DIR,
    JobDefinition,
    S3Layout,
    SageMakerSettings,
    add_axis_flag,
    add_config_flag,
    add_sagemaker_flags,
    add_supernet_identity_flags,
    grid_cells,
    job_base_name,
    parse_bool,
    supernet_checkpoint_key,
    supernet_folder,
)
from nas_llm.common.errors import UsageError
from nas_llm.common.flags import DISTILLING_STRATEGIES, REORDER_UNITS, SAMPLING_DISTRIBUTIONS


def add_training_flags(parser: argparse.ArgumentParser, grid: bool) -> None:
    """The flags of train_supernet.py that a job sets, with the original example's values as defaults."""
    add_supernet_identity_flags(parser, grid)
    parser.add_argument("--learning_rate", type=float, default=2e-5, help="default: 2e-05")
    parser.add_argument("--per_device_train_batch_size", type=int, default=4, help="default: 4")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=8, help="default: 8")
    parser.add_argument("--fp16", type=parse_bool, default=True, help="fp16 mixed precision (default: True)")
    parser.add_argument(
        "--save_strategy", choices=("epoch", "no"), default="epoch",
        help="'epoch' also keeps a checkpoint per epoch, which the search's input channel downloads too "
        "(default: epoch)",
    )
    parser.add_argument(
        "--reorder_units", choices=REORDER_UNITS, default="none",
        help="'importance' stores each layer's heads and neurons most important first before training "
        "(default: none). Not part of the S3 folder: change --s3_prefix to train both kinds",
    )
    parser.add_argument(
        "--num_importance_batches", type=int, default=32,
        help="training batches the importance scores use (default: 32)",
    )
    parser.add_argument(
        "--group_by_length", type=parse_bool, default=False,
        help="batch training examples of similar length together: less padding, faster steps (default: False)",
    )
    add_distillation_flags(parser)
    parser.add_argument(
        "--sampling_distribution", choices=SAMPLING_DISTRIBUTIONS, default="uniform",
        help="'params' spreads the parameter counts of the random sub-networks evenly (default: uniform). Not part "
        "of the S3 folder: change --s3_prefix to train both kinds",
    )
    add_sagemaker_flags(parser, volume_size_gb=30)


def add_distillation_flags(parser: argparse.ArgumentParser) -> None:
    """train_supernet.py's label and teacher flags, passed through when they differ from its defaults."""
    group = parser.add_argument_group(
        "labels and teacher (train_supernet.py's flags; not part of the S3 layout: runs that differ only here need "
        "another --s3_prefix)"
    )
    group.add_argument(
        "--standardize_labels", type=parse_bool, default=True,
        help="regression: train on standardised labels (default: True)",
    )
    group.add_argument(
        "--teacher_model_name_or_path", default=None,
        help=f"fine-tuned teacher for {', '.join(DISTILLING_STRATEGIES)}: an s3:// folder (downloaded as the "
        "job's 'teacher' input channel, e.g. the super-network folder of a standard job) or a hub id (default: none)",
    )
    for flag, meaning in (
        ("init_from_teacher", "start from the teacher's weights"),
        ("distill_hidden_states", "add the hidden-state distillation loss"),
        ("distill_full_network", "the full network learns from the teacher too"),
    ):
        group.add_argument(f"--{flag}", type=parse_bool, default=False, help=f"{meaning} (default: False)")


def distillation_settings(args: argparse.Namespace) -> tuple[dict[str, str | bool], dict[str, str]]:
    """(hyperparameters, input channels) of the label and teacher flags; refused where train_supernet.py would."""
    uses_teacher = args.teacher_model_name_or_path is not None
    if (uses_teacher or args.distill_hidden_states) and args.sampling_strategy not in DISTILLING_STRATEGIES:
        raise UsageError(
            f"--teacher_model_name_or_path and --distill_hidden_states need a sampling strategy that distils "
            f"({', '.join(DISTILLING_STRATEGIES)}), not {args.sampling_strategy}"
        )
    if (args.init_from_teacher or args.distill_full_network) and not uses_teacher:
        raise UsageError("--init_from_teacher and --distill_full_network need --teacher_model_name_or_path")
    hyperparameters: dict[str, str | bool] = {}
    channels: dict[str, str] = {}
    if not args.standardize_labels:
        hyperparameters["standardize_labels"] = False
    if uses_teacher:
        teacher = args.teacher_model_name_or_path
        if teacher.startswith("s3://"):
            channels[TEACHER_CHANNEL] = teacher.rstrip("/") + "/"
            teacher = TEACHER_CHANNEL_DIR
        hyperparameters["teacher_model_name_or_path"] = teacher
    for flag in ("init_from_teacher", "distill_hidden_states", "distill_full_network"):
        if getattr(args, flag):
            hyperparameters[flag] = True
    return hyperparameters, channels


def supernet_job(args: argparse.Namespace, layout: S3Layout, settings: SageMakerSettings) -> JobDefinition:
    """train_supernet.py writing its checkpoint to the synced directory and its TensorBoard logs to S3."""
    checkpoint_key = supernet_checkpoint_key(layout, args)
    distillation, channels = distillation_settings(args)
    return JobDefinition(
        base_job_name=job_base_name(
            "supernet", (args.task_name, f"s{args.seed}", args.sampling_strategy, args.search_space), checkpoint_key
        ),
        entry_script="train_supernet.py",
        hyperparameters={
            "model_name_or_path": args.model_name_or_path,
            "task_name": args.task_name,
            "sampling_strategy": args.sampling_strategy,
            "search_space": args.search_space,
            "seed": args.seed,
            "num_train_epochs": args.num_train_epochs,
            "learning_rate": args.learning_rate,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "per_device_eval_batch_size": args.per_device_eval_batch_size,
            "group_by_length": args.group_by_length,
            "fp16": args.fp16,
            "save_strategy": args.save_strategy,
            "reorder_units": args.reorder_units,
            "num_importance_batches": args.num_importance_batches,
            "sampling_distribution": args.sampling_distribution,
            "output_dir": CHECKPOINT_DIR,
            "log_dir": TENSORBOARD_DIR,
            # SageMaker restores the synced checkpoint folder when a (spot) job restarts: continue from it.
            "resume_from_checkpoint": "latest",
            **distillation,
        },
        checkpoint_s3_uri=layout.uri(checkpoint_key),
        tensorboard_s3_uri=layout.uri(layout.key("tensorboard", "supernet", *supernet_folder(args))),
        sagemaker=settings,
        input_channels=channels,
    )


def add_search_flags(parser: argparse.ArgumentParser, grid: bool) -> None:
    """The super-network to search (as it was trained) and the flags of run_offline_search.py a job sets."""
    add_supernet_identity_flags(parser, grid)
    add_axis_flag(parser, SEARCH_STRATEGY, grid)
    parser.add_argument("--num_samples", type=int, default=500, help="sub-networks to evaluate (default: 500)")
    add_sagemaker_flags(parser, volume_size_gb=125)


def search_job(args: argparse.Namespace, layout: S3Layout, settings: SageMakerSettings) -> JobDefinition:
    """run_offline_search.py reading the super-network from the `model` channel, writing to the synced directory."""
    supernet_uri = layout.uri(supernet_checkpoint_key(layout, args))
    search_folder = (*supernet_folder(args), args.search_strategy)
    results_key = layout.key("search", *search_folder)
    return JobDefinition(
        base_job_name=job_base_name(
            "search",
            (args.task_name, f"s{args.seed}", args.sampling_strategy, args.search_space, args.search_strategy),
            results_key,
        ),
        entry_script="run_offline_search.py",
        hyperparameters={
            "model_name_or_path": args.model_name_or_path,
            "task_name": args.task_name,
            "search_space": args.search_space,
            "search_strategy": args.search_strategy,
            "num_samples": args.num_samples,
            "seed": args.seed,
            "checkpoint_dir_model": MODEL_CHANNEL_DIR,
            "output_dir": CHECKPOINT_DIR,
            "log_dir": TENSORBOARD_DIR,
        },
        checkpoint_s3_uri=layout.uri(results_key),
        tensorboard_s3_uri=layout.uri(layout.key("tensorboard", "search", *search_folder)),
        sagemaker=settings,
        input_channels={MODEL_CHANNEL: supernet_uri},
        launch_after_s3_object=supernet_uri + SUPERNET_DONE_FILE,
    )


def add_training_grid_flags(parser: argparse.ArgumentParser) -> None:
    """The training flags with a list of values per grid axis, and --config."""
    add_training_flags(parser, grid=True)
    add_config_flag(parser)


def supernet_grid_jobs(args: argparse.Namespace, layout: S3Layout, settings: SageMakerSettings) -> list[JobDefinition]:
    """One training job per cell: tasks x seeds x sampling strategies x search spaces."""
    return [supernet_job(cell, layout, settings) for cell in grid_cells(args, SUPERNET_AXES)]


def add_search_grid_flags(parser: argparse.ArgumentParser) -> None:
    """The search flags with a list of values per grid axis, and --config."""
    add_search_flags(parser, grid=True)
    add_config_flag(parser)


def search_grid_jobs(args: argparse.Namespace, layout: S3Layout, settings: SageMakerSettings) -> list[JobDefinition]:
    """One search job per cell: the training grid's cells x search strategies."""
    return [search_job(cell, layout, settings) for cell in grid_cells(args, (*SUPERNET_AXES, SEARCH_STRATEGY))]
