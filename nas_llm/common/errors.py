"""The one exception type for bad user input, and the argument parsing that produces it.

Entry scripts catch ``UsageError`` and print its message as a single line on stderr
with a non-zero exit code, so a typo never ends in a traceback from deep inside a library.
A misspelled flag names itself and the closest valid flag.
"""

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence


class UsageError(Exception):
    """Input the user can fix: the message says what was wrong and what to do."""


def exit_on_usage_error(main: Callable[[], None]) -> None:
    """Run an entry point; a UsageError becomes one line on stderr and exit code 2."""
    try:
        main()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def check_flags(parser: argparse.ArgumentParser, args: Sequence[str]) -> None:
    """Refuse an unknown flag, naming the closest valid one; before parsing, which would first ask for
    the required flags."""
    valid = list(parser._option_string_actions)
    for arg in args:
        if arg == "--":
            return
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in valid:
            closest = difflib.get_close_matches(flag, valid, n=1)
            hint = f"did you mean {closest[0]}?" if closest else "see --help for the flags"
            raise UsageError(f"unknown flag {flag}; {hint}")


class UsageArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors (one line, exit code 2), naming the closest flag to an unknown one.

    Abbreviated flags are refused as well: a typo never silently stands for a longer flag.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        args = sys.argv[1:] if args is None else list(args)
        check_flags(self, args)
        parsed, unexpected = self.parse_known_args(args, namespace)
        if unexpected:
            raise UsageError(f"unexpected argument '{unexpected[0]}'; see --help for the flags")
        return parsed

    def error(self, message: str):
        raise UsageError(message)
