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

from collections.abc import Sequence
from functools import partial

from nas_llm.cloud.sagemaker_jobs import run_launcher, single_job
from nas_llm.cloud.workflow_jobs import add_search_flags, search_job
from nas_llm.common.errors import exit_on_usage_error


def main(argv: Sequence[str] | None = None) -> None:
    run_launcher(__doc__, partial(add_search_flags, grid=False), single_job(search_job), argv)


if __name__ == "__main__":
    exit_on_usage_error(main)
