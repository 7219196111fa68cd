"""Errors that reach the user as one line, and the CLI wrapper that prints them.

Every problem with user input (a manifest row, a file, a config key) raises `InputError` with a message that
names the file or row and says what is wrong. CLIs run their function through `run_cli`, which prints that
message as a single `error: ...` line on stderr and exits with status 2, so nothing half-done looks complete.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


class InputError(ValueError):
    """Bad user input. The message is one line naming the file or row and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`; turn `InputError` and Ctrl-C into a one-line message and a non-zero status."""
    try:
        status = main(argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: <problem> (see --help)` and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")
