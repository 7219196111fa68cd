"""Commands the tools print, spelled so that they run as printed from a fresh shell.

`make` installs into `.venv` without activating it, so a printed `tensorboard ...` or `python -m ...` fails in a
new terminal (no such command, or a Python without the package). `tool(name)` and `python()` give the plain
name when the shell's PATH finds this environment's program, else its path (relative to the working folder when
inside it, e.g. `.venv/bin/tensorboard`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def shown(path: str | os.PathLike) -> str:
    """`path` relative to the working folder when inside it (shorter to read and to type), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _spelled(path: Path, name: str) -> str:
    found = shutil.which(name)  # compared unresolved: a venv's python is a symlink to the system's
    if found and os.path.abspath(found) == os.path.abspath(path):
        return name
    return shown(path)


def tool(name: str) -> str:
    """`name` (e.g. "tensorboard", "saved_model_cli") as a shell command that runs this environment's program."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        return name  # not installed beside this Python: the plain name is the best guess
    return _spelled(path, name)


def python() -> str:
    """This Python as a shell command: "python" when PATH finds it, else its path (e.g. `.venv/bin/python`)."""
    path = Path(sys.executable)
    spelled = _spelled(path, "python")
    if spelled == "python":
        return "python"
    return spelled if os.access(path, os.X_OK) else "python"
