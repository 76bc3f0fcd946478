r"""Launch one super-network training job (train_supernet.py) on SageMaker.

The checkpoint goes to /opt/ml/checkpoints, which SageMaker syncs with the super-network's folder of the S3
layout (see sagemaker_jobs.py), where launch_offline_search.py finds it. A job that already exists is not
launched again.

    python launch_supernet_training.py --task_name rte --sampling_strategy one_shot --search_space small \
        --seed 0 --role arn:aws:iam::<account>:role/<name> --bucket <bucket> [--use_spot] [--dry_run]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nas_llm.cloud.sagemaker_jobs import (
    CHECKPOINT_DIR,
    TEACHER_CHANNEL,
    TEACHER_CHANNEL_DIR,
    TENSORBOARD_DIR,
    JobDefinition,
    S3Layout,
    SageMakerSettings,
    add_sagemaker_flags,
    add_supernet_identity_flags,
    job_base_name,
    parse_bool,
    parse_launcher_args,
    s3_layout,
    sagemaker_settings,
    submit,
    supernet_checkpoint_key,
    supernet_folder,
)
from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_flags(parser, grid=False)
    args = parse_launcher_args(parser, argv)
    layout = s3_layout(args)
    submit([supernet_job(args, layout, sagemaker_settings(args, layout))], layout, args)


if __name__ == "__main__":
    exit_on_usage_error(main)
