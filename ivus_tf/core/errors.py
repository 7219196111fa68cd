"""Errors that reach the user as one line, and the CLI wrapper that prints them.

Every problem with user input (a manifest row, a file, a config key) raises `InputError` with a message that
names the file or row and says what is wrong. CLIs run their function through `run_cli`, which prints that
message as a single `error: ...` line on stderr and exits with status 2, so nothing half-done looks complete.
"""

from __future__ import annotations

import argparse
import math
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


def positive_number(value, what: str, unit: str = "") -> float:
    """`value` as a float, or `InputError` naming `what` (a field, an option) unless it is a finite number > 0;
    `unit` is appended to the message, e.g. " (mm per pixel)"."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{what} must be a finite number > 0{unit}, got {value!r}")
    return number


def positive_int_arg(text: str) -> int:
    """argparse `type=` for an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float_arg(text: str) -> float:
    """argparse `type=` for a finite number > 0."""
    try:
        return positive_number(text, "the value")
    except InputError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}") from None


def non_negative_float_arg(text: str) -> float:
    """argparse `type=` for a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def finite_float_arg(text: str) -> float:
    """argparse `type=` for any finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: <problem> (see --help)` and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")
