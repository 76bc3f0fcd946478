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

from errors import exit_on_usage_error
from sagemaker_jobs import (
    CHECKPOINT_DIR,
    REORDER_UNITS,
    TENSORBOARD_DIR,
    JobDefinition,
    LauncherArgumentParser,
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
    add_sagemaker_flags(parser, volume_size_gb=30)


def supernet_job(args: argparse.Namespace, layout: S3Layout, settings: SageMakerSettings) -> JobDefinition:
    """train_supernet.py writing its checkpoint to the synced directory and its TensorBoard logs to S3."""
    checkpoint_key = supernet_checkpoint_key(layout, args)
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
            "fp16": args.fp16,
            "save_strategy": args.save_strategy,
            "reorder_units": args.reorder_units,
            "num_importance_batches": args.num_importance_batches,
            "output_dir": CHECKPOINT_DIR,
            "log_dir": TENSORBOARD_DIR,
            # SageMaker restores the synced checkpoint folder when a (spot) job restarts: continue from it.
            "resume_from_checkpoint": "latest",
        },
        checkpoint_s3_uri=layout.uri(checkpoint_key),
        tensorboard_s3_uri=layout.uri(layout.key("tensorboard", "supernet", *supernet_folder(args))),
        sagemaker=settings,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = LauncherArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_flags(parser, grid=False)
    args = parse_launcher_args(parser, argv)
    layout = s3_layout(args)
    submit([supernet_job(args, layout, sagemaker_settings(args, layout))], layout, args)


if __name__ == "__main__":
    exit_on_usage_error(main)
