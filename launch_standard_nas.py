r"""Launch one standard-NAS run (run_standard_nas.py) as a SageMaker training job.

syne-tune 0.16 has no SageMaker backend (it was moved out of the package), so the job runs the whole tuner
on one instance: Syne Tune's LocalBackend starts `--n_workers` trials at a time, one GPU each (the default
ml.g4dn.12xlarge has 4). The results and the trials' checkpoints go to /opt/ml/checkpoints, which SageMaker
syncs with the run's S3 folder (see sagemaker_jobs.py):

    s3://<bucket>/<s3_prefix>/standard_nas/<model>/<task>/<scheduler>/<search_space>/epochs_<E>/seed_<S>/

A job that already exists is not launched again; a job restarted after a spot interruption starts the
run afresh (`--overwrite_output_dir True`: Syne Tune cannot continue a stopped tuner).

    python launch_standard_nas.py --task_name rte --search_space small --scheduler moasha --max_epochs 3 \
        --max_wallclock_time 36000 --role arn:aws:iam::<account>:role/<name> --bucket <bucket> [--dry_run]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nas_llm.cloud.sagemaker_jobs import (
    CHECKPOINT_DIR,
    SEARCH_SPACE,
    SEED,
    TASK,
    JobDefinition,
    S3Layout,
    SageMakerSettings,
    add_axis_flag,
    add_sagemaker_flags,
    job_base_name,
    parse_bool,
    run_launcher,
    single_job,
)
from nas_llm.common.errors import UsageError, exit_on_usage_error

SCHEDULERS = ("moasha", "random_search")  # standard_nas.SCHEDULERS, repeated so that launching needs no torch
DEFAULT_INSTANCE_TYPE = "ml.g4dn.12xlarge"  # 4 GPUs: one per worker


def add_standard_nas_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of run_standard_nas.py that a job sets."""
    parser.add_argument(
        "--model_name_or_path", default="bert-base-cased",
        help="hub id of the pre-trained model (default: bert-base-cased)",
    )
    for axis in (TASK, SEED, SEARCH_SPACE):
        add_axis_flag(parser, axis, grid=False)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="moasha", help="default: moasha")
    parser.add_argument("--max_epochs", type=int, default=3, help="epochs per trial at most (default: 3)")
    parser.add_argument("--n_workers", type=int, default=4, help="trials at a time, one GPU each (default: 4)")
    parser.add_argument("--num_samples", type=int, default=None, help="trials to start at most (default: no limit)")
    parser.add_argument(
        "--max_wallclock_time", type=int, default=None, help="seconds of tuning (default: no limit); one budget needed"
    )
    parser.add_argument("--learning_rate", type=float, default=2e-5, help="default: 2e-05")
    parser.add_argument("--per_device_train_batch_size", type=int, default=4, help="default: 4")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=8, help="default: 8")
    parser.add_argument("--fp16", type=parse_bool, default=True, help="fp16 mixed precision (default: True)")
    add_sagemaker_flags(parser, volume_size_gb=125)
    parser.set_defaults(instance_type=DEFAULT_INSTANCE_TYPE)


def run_folder(args: argparse.Namespace) -> tuple[str, ...]:
    return (
        args.model_name_or_path.replace("/", "--"), args.task_name, args.scheduler, args.search_space,
        f"epochs_{args.max_epochs}", f"seed_{args.seed}",
    )


def standard_nas_job(args: argparse.Namespace, layout: S3Layout, settings: SageMakerSettings) -> JobDefinition:
    """run_standard_nas.py writing its trials and results to the synced directory."""
    results_key = layout.key("standard_nas", *run_folder(args))
    budgets = {"num_samples": args.num_samples, "max_wallclock_time": args.max_wallclock_time}
    return JobDefinition(
        base_job_name=job_base_name(
            "stdnas", (args.task_name, f"s{args.seed}", args.scheduler, args.search_space), results_key
        ),
        entry_script="run_standard_nas.py",
        hyperparameters={
            "model_name_or_path": args.model_name_or_path,
            "task_name": args.task_name,
            "search_space": args.search_space,
            "scheduler": args.scheduler,
            "max_epochs": args.max_epochs,
            "n_workers": args.n_workers,
            **{name: value for name, value in budgets.items() if value is not None},
            "learning_rate": args.learning_rate,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "per_device_eval_batch_size": args.per_device_eval_batch_size,
            "fp16": args.fp16,
            "seed": args.seed,
            "output_dir": CHECKPOINT_DIR,
            "overwrite_output_dir": True,  # a restarted (spot) job starts afresh
        },
        checkpoint_s3_uri=layout.uri(results_key),
        tensorboard_s3_uri=layout.uri(layout.key("tensorboard", "standard_nas", *run_folder(args))),
        sagemaker=settings,
    )


def check_budget(args: argparse.Namespace) -> None:
    """Standard NAS runs until a budget is spent: at least one is needed."""
    if args.num_samples is None and args.max_wallclock_time is None:
        raise UsageError("give the run a budget: --num_samples, --max_wallclock_time or both")


def main(argv: Sequence[str] | None = None) -> None:
    run_launcher(__doc__, add_standard_nas_flags, single_job(standard_nas_job), argv, check_budget)


if __name__ == "__main__":
    exit_on_usage_error(main)
