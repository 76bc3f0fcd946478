r"""Launch the search grid on SageMaker: tasks x seeds x sampling strategies x search spaces x search strategies.

Each cell is the job launch_offline_search.py would launch, on the super-network that
launch_all_supernet_training.py trained with the same values. Re-running is safe: a job that exists is
skipped, and a cell whose super-network is not finished yet waits, so the same command run again later
launches exactly what is missing.

    python launch_all_offline_search.py --task_names rte,mrpc --seeds 0,1 --sampling_strategies one_shot \
        --search_spaces small --search_strategies random_search,local_search,morea --role <arn> --bucket <bucket>
    python launch_all_offline_search.py --config grid.json --dry_run
"""

from __future__ import annotations

from collections.abc import Sequence

from nas_llm.cloud.sagemaker_jobs import run_launcher
from nas_llm.cloud.workflow_jobs import add_search_grid_flags, search_grid_jobs
from nas_llm.common.errors import exit_on_usage_error


def main(argv: Sequence[str] | None = None) -> None:
    run_launcher(__doc__, add_search_grid_flags, search_grid_jobs, argv)


if __name__ == "__main__":
    exit_on_usage_error(main)
