"""The argument parser a script answers `--help` with, captured in-process.

Only the script's file name is needed (not where its argument dataclasses live), so the flags reference and the
docs test keep working when the library moves. The script runs as `__main__` with `--help` until argparse is
about to print the help; that parser is returned instead of printed. Runs scripts, so call it in a subprocess.

    python tools/script_parsers.py train_supernet.py bench/make_tiny_lm.py
    # JSON: script -> {"flags": every flag, "without_help": the flags --help prints no text for}
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path
from unittest import mock

PROJECT_DIR = Path(__file__).resolve().parents[1]


class _HelpRequested(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


def _capture(parser: argparse.ArgumentParser, file=None) -> None:
    raise _HelpRequested(parser)


def parser_of(script: str) -> argparse.ArgumentParser:
    """The parser that `python <script> --help` prints (script relative to the project directory)."""
    path = PROJECT_DIR / script
    if not path.is_file():
        raise FileNotFoundError(f"no script {script} in {PROJECT_DIR}")
    argv, sys_path = sys.argv, list(sys.path)
    sys.argv = [str(path), "--help"]
    sys.path[:0] = [str(path.parent), str(PROJECT_DIR)]  # as `python <script>` from the project directory
    try:
        with mock.patch.object(argparse.ArgumentParser, "print_help", _capture):
            runpy.run_path(str(path), run_name="__main__")
    except _HelpRequested as requested:
        return requested.parser
    finally:
        sys.argv, sys.path[:] = argv, sys_path
    raise RuntimeError(f"{script} --help printed no argparse help")


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag the parser accepts, e.g. ['--help', '--no_tune_masks', '--tune_masks', '-h']."""
    return sorted(flag for action in parser._actions for flag in action.option_strings)


def flags_without_help(parser: argparse.ArgumentParser) -> list[str]:
    """The flags whose --help line says nothing: a user would have to read the code to know what they do."""
    return sorted(action.option_strings[-1] for action in parser._actions
                  if action.option_strings and not action.help)


def main() -> None:
    parsers = {script: parser_of(script) for script in sys.argv[1:]}
    print(json.dumps({script: {"flags": option_strings(parser), "without_help": flags_without_help(parser)}
                      for script, parser in parsers.items()}))


if __name__ == "__main__":
    main()
