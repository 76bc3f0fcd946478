r"""Launch one multi-objective search (run_offline_search.py) on a trained super-network on SageMaker.

The super-network's S3 folder (the layout of sagemaker_jobs.py, from the same model, task, sampling strategy,
search space, epochs and seed as its training job) is the job's input channel `model`, so SageMaker downloads
it to /opt/ml/input/data/model (= $SM_CHANNEL_MODEL, passed as --checkpoint_dir_model). The results go to
/opt/ml/checkpoints, which SageMaker syncs with the search's S3 folder while the job runs: results_<task>.json
lands there as a plain file, and a job restarted after a spot interruption resumes from the synced log. The
job waits (is not launched) until the super-network's training has written its results.json, and a job that
already exists is not launched again.

    python launch_offline_search.py --task_name rte --sampling_strategy one_shot --search_space small \
        --search_strategy local_search --seed 0 --role arn:aws:iam::<account>:role/<name> --bucket <bucket>
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nas_llm.cloud.sagemaker_jobs import (
    CHECKPOINT_DIR,
    MODEL_CHANNEL,
    MODEL_CHANNEL_DIR,
    SEARCH_STRATEGY,
    SUPERNET_DONE_FILE,
    TENSORBOARD_DIR,
    JobDefinition,
    S3Layout,
    SageMakerSettings,
    add_axis_flag,
    add_sagemaker_flags,
    add_supernet_identity_flags,
    job_base_name,
    parse_launcher_args,
    s3_layout,
    sagemaker_settings,
    submit,
    supernet_checkpoint_key,
    supernet_folder,
)
from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_flags(parser, grid=False)
    args = parse_launcher_args(parser, argv)
    layout = s3_layout(args)
    submit([search_job(args, layout, sagemaker_settings(args, layout))], layout, args)


if __name__ == "__main__":
    exit_on_usage_error(main)
