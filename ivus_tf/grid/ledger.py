"""GRID_DIR/results.jsonl as a ledger many processes share: read it, claim a run, append one line atomically.

    GRID_DIR/results.jsonl      one line per finished run (schema: `ivus_tf.grid.results`)
    GRID_DIR/results.lock       flock'ed while a line is appended
    GRID_DIR/locks/<run_id>.lock  flock'ed while a process trains that run

`append_result` re-reads and validates the file under the lock, skips a run already recorded, and writes old
content plus the new line through a durable atomic write (`ivus_tf.core.atomic`): readers see the old file or the
new one, never half a line, and concurrent appenders (shards, `--devices` workers) take turns. `claim_run` holds a
non-blocking flock on the run's lock file while training it; the kernel drops it when the holder dies, so a killed
worker's run is free for the next start. flock works across processes on one machine and on NFS v4; shards on
machines without a shared file system write separate GRID_DIRs whose files are concatenated afterwards. This module
does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from ivus_tf.core.atomic import atomic_write_bytes, file_lock
from ivus_tf.grid.results import RESULTS_NAME, read_results, run_key, validate_result

LOCK_NAME = "results.lock"
LOCKS_DIR = "locks"


def results_path(grid_dir: str | Path) -> Path:
    return Path(grid_dir) / RESULTS_NAME


def read_ledger(grid_dir: str | Path) -> list[dict]:
    """The validated records of GRID_DIR/results.jsonl; [] when it does not exist or holds only blank lines.
    A corrupt line is an `InputError` naming the file and line number (`ivus_tf.grid.results.read_results`)."""
    path = results_path(grid_dir)
    if not path.is_file() or not path.read_text(encoding="utf-8").strip():
        return []
    return read_results(path)


@contextlib.contextmanager
def claim_run(grid_dir: str | Path, run_id: str) -> Iterator[bool]:
    """Context manager yielding True while this process holds `run_id`'s lock, False when another process does."""
    with file_lock(Path(grid_dir) / LOCKS_DIR / f"{run_id}.lock", blocking=False) as held:
        yield held


def append_result(grid_dir: str | Path, line: str) -> bool:
    """Append `line` (from `make_result_line`) to GRID_DIR/results.jsonl atomically (module docstring).
    False, writing nothing, when its run (the run_id or the run's identity) is already recorded."""
    grid_dir = Path(grid_dir)
    path = results_path(grid_dir)
    if not line.endswith("\n") or "\n" in line[:-1]:
        raise ValueError("a results line is one line ending in a newline")
    record = validate_result(json.loads(line), "results line to append")
    with file_lock(grid_dir / LOCK_NAME):
        for stale in grid_dir.glob(f".tmp-*-{RESULTS_NAME}"):  # left by a process killed mid-append
            stale.unlink(missing_ok=True)
        existing = read_ledger(grid_dir)
        if any(r["run_id"] == record["run_id"] or run_key(r) == run_key(record) for r in existing):
            return False
        old = path.read_bytes() if path.is_file() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write_bytes(path, old + line.encode("utf-8"), durable=True)
    return True
