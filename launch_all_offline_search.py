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

import argparse
from collections.abc import Sequence

from launch_offline_search import add_search_flags, search_job
from nas_llm.cloud.sagemaker_jobs import (
    SEARCH_STRATEGY,
    SUPERNET_AXES,
    add_config_flag,
    grid_cells,
    parse_launcher_args,
    s3_layout,
    sagemaker_settings,
    submit,
)
from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error


def main(argv: Sequence[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_flags(parser, grid=True)
    add_config_flag(parser)
    args = parse_launcher_args(parser, argv)
    layout = s3_layout(args)
    settings = sagemaker_settings(args, layout)
    cells = grid_cells(args, (*SUPERNET_AXES, SEARCH_STRATEGY))
    submit([search_job(cell, layout, settings) for cell in cells], layout, args)


if __name__ == "__main__":
    exit_on_usage_error(main)
