"""Errors that reach the user as one line, and the CLI wrapper that prints them.

Every problem with user input (a manifest row, a file, a config key) raises `InputError` with a message that
names the file or row and says what is wrong. CLIs run their function through `run_cli`, which prints that
message as a single `error: ...` line on stderr and exits with status 2, so nothing half-done looks complete.
A file-system error (a read-only or missing folder, a file where a folder should be) is one line naming the path,
status 2 as well. Ctrl-C exits 130 and SIGTERM (Slurm, Kubernetes, `kill`) 143, both after the same clean-up:
SIGTERM is raised as `Terminated`, a `KeyboardInterrupt`, so every atomic writer removes its temporary.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

# The physical range of pixel_spacing_mm: 1 um (OCT is ~5 um) to 1 mm (a 10 mm IVUS field at 10 pixels).
PIXEL_SPACING_RANGE_MM = (0.001, 1.0)


class InputError(ValueError):
    """Bad user input. The message is one line naming the file or row and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises `KeyboardInterrupt` so that the same clean-up runs."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise `Terminated` on SIGTERM inside the block (main thread only); the previous handler afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_OS_HINTS = {errno.EACCES: "no permission: choose another path or fix its permissions",
             errno.EPERM: "no permission: choose another path or fix its permissions",
             errno.EROFS: "read-only file system: choose another path",
             errno.ENOTDIR: "a part of the path is a file, not a folder",
             errno.EISDIR: "a folder where a file was expected",
             errno.ENOSPC: "no space left on the device"}


def os_error_line(error: OSError) -> str:
    """`PATH: what went wrong (hint)` for an OSError, one line."""
    path = error.filename if error.filename is not None else None
    what = error.strerror or type(error).__name__
    hint = _OS_HINTS.get(error.errno)
    text = f"{what} ({hint})" if hint and hint.lower() not in what.lower() else what
    if error.filename2 is not None:
        text += f" (-> {error.filename2})"
    return " ".join(f"{path}: {text}".split()) if path is not None else " ".join(f"{text}: {error}".split())


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`; turn `InputError`, file-system errors, Ctrl-C and SIGTERM into a one-line message and a
    non-zero status (module docstring)."""
    try:
        with sigterm_as_interrupt():
            status = main(argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print("error: terminated (SIGTERM); nothing half-written was kept", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
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


def check_pixel_spacing_mm(value, what: str = "pixel_spacing_mm") -> float:
    """`value` as a float, or `InputError` naming `what` unless it lies in `PIXEL_SPACING_RANGE_MM` also after
    the cast to float32 (how records store it: 1e-50 would become 0.0, 1e39 infinity)."""
    low, high = PIXEL_SPACING_RANGE_MM
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    import numpy as np

    with np.errstate(over="ignore"):
        stored = float(np.float32(number))
    if not (math.isfinite(stored) and low <= stored <= high):
        raise InputError(f"{what} {_short(value)} must be a finite number of mm per pixel between {low:g} and "
                         f"{high:g}")
    return number


def pixel_spacing_arg(text: str) -> float:
    """argparse `type=` for a pixel spacing in mm (`check_pixel_spacing_mm`)."""
    try:
        return check_pixel_spacing_mm(text, "the pixel spacing")
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int_arg(text: str) -> int:
    """argparse `type=` for an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int_arg(text: str) -> int:
    """argparse `type=` for an integer >= 0."""
    return _int_at_least(text, 0)


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
