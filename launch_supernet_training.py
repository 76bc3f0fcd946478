r"""Launch one super-network training job (train_supernet.py) on SageMaker.

The checkpoint goes to /opt/ml/checkpoints, which SageMaker syncs with the super-network's folder of the S3
layout (see sagemaker_jobs.py), where launch_offline_search.py finds it. A job that already exists is not
launched again.

    python launch_supernet_training.py --task_name rte --sampling_strategy one_shot --search_space small \
        --seed 0 --role arn:aws:iam::<account>:role/<name> --bucket <bucket> [--use_spot] [--dry_run]
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from nas_llm.cloud.sagemaker_jobs import run_launcher, single_job
from nas_llm.cloud.workflow_jobs import add_training_flags, supernet_job
from nas_llm.common.errors import exit_on_usage_error


def main(argv: Sequence[str] | None = None) -> None:
    run_launcher(__doc__, partial(add_training_flags, grid=False), single_job(supernet_job), argv)


if __name__ == "__main__":
    exit_on_usage_error(main)
