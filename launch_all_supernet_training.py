r"""Launch the super-network training grid on SageMaker: tasks x seeds x sampling strategies x search spaces.

Each cell is the job launch_supernet_training.py would launch with those values. Re-running is safe: a job
that exists (running, finished, or failed/stopped unless --relaunch_failed) is skipped, so the same command
launches only what is missing.

    python launch_all_supernet_training.py --task_names rte,mrpc,cola --seeds 0,1,2 \
        --sampling_strategies standard,sandwich,one_shot --search_spaces small --role <arn> --bucket <bucket>
    python launch_all_supernet_training.py --config grid.json --dry_run
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from launch_supernet_training import add_training_flags, supernet_job
from nas_llm.cloud.sagemaker_jobs import (
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
    add_training_flags(parser, grid=True)
    add_config_flag(parser)
    args = parse_launcher_args(parser, argv)
    layout = s3_layout(args)
    settings = sagemaker_settings(args, layout)
    submit([supernet_job(cell, layout, settings) for cell in grid_cells(args, SUPERNET_AXES)], layout, args)


if __name__ == "__main__":
    exit_on_usage_error(main)
