"""One command for every workflow: `nas-llm <subcommand> <flags>` runs that entry script with those flags.

`pip install -e .` installs it as `nas-llm` (as litgpt and whittle expose theirs); each subcommand takes
exactly its script's flags, so `nas-llm train --help` lists those of `python train_supernet.py --help`:

    nas-llm prune ...                 python prune.py ...   (the whole pipeline: train, search, select, recover)
    nas-llm train ...                 python train_supernet.py ...
    nas-llm search ...                python run_offline_search.py ...
    nas-llm select ...                python select_and_extract.py ...
    nas-llm plot ...                  python plot_pareto.py ...
    nas-llm rfp ...                   python run_rfp.py ...
    nas-llm standard-nas ...          python run_standard_nas.py ...
    nas-llm launch-train ...          python launch_supernet_training.py ...   (and the other SageMaker launchers)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from nas_llm.common.errors import UsageError, exit_on_usage_error

# Subcommand -> entry script; imported only when chosen, so launching a job never imports torch.
SUBCOMMANDS = {
    "prune": "prune",
    "train": "train_supernet",
    "search": "run_offline_search",
    "select": "select_and_extract",
    "plot": "plot_pareto",
    "rfp": "run_rfp",
    "standard-nas": "run_standard_nas",
    "launch-train": "launch_supernet_training",
    "launch-train-grid": "launch_all_supernet_training",
    "launch-search": "launch_offline_search",
    "launch-search-grid": "launch_all_offline_search",
    "launch-standard-nas": "launch_standard_nas",
}
USAGE = "usage: nas-llm {" + ",".join(SUBCOMMANDS) + "} [flags of that script; --help lists them]"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the entry script of the subcommand in `argv[0]` with the rest of `argv` as its flags."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + "\n".join(f"  {name:20s} {script}.py" for name, script in SUBCOMMANDS.items()))
        return
    subcommand, flags = argv[0], argv[1:]
    if subcommand not in SUBCOMMANDS:
        raise UsageError(f"unknown subcommand '{subcommand}'; choose one of: {', '.join(SUBCOMMANDS)}")
    script = importlib.import_module(SUBCOMMANDS[subcommand])
    sys.argv[0] = f"nas-llm {subcommand}"  # what the script's --help and errors call the program
    script.main(flags)


def console_main() -> None:
    """The installed `nas-llm` command."""
    exit_on_usage_error(main)


if __name__ == "__main__":
    console_main()
