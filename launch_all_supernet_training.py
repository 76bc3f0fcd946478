r"""Launch the super-network training grid on SageMaker: tasks x seeds x sampling strategies x search spaces.

Each cell is the job launch_supernet_training.py would launch with those values. Re-running is safe: a job
that exists (running, finished, or failed/stopped unless --relaunch_failed) is skipped, so the same command
launches only what is missing.

    python launch_all_supernet_training.py --task_names rte,mrpc,cola --seeds 0,1,2 \
        --sampling_strategies standard,sandwich,one_shot --search_spaces small --role <arn> --bucket <bucket>
    python launch_all_supernet_training.py --config grid.json --dry_run
"""

from __future__ import annotations

from collections.abc import Sequence

from nas_llm.cloud.sagemaker_jobs import run_launcher
from nas_llm.cloud.workflow_jobs import add_training_grid_flags, supernet_grid_jobs
from nas_llm.common.errors import exit_on_usage_error


def main(argv: Sequence[str] | None = None) -> None:
    run_launcher(__doc__, add_training_grid_flags, supernet_grid_jobs, argv)


if __name__ == "__main__":
    exit_on_usage_error(main)
