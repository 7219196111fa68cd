"""Writing files and folders so that an interrupted or failed write leaves nothing that looks complete.

Every file goes to a temporary name in its own folder and is renamed over the target at the end (`os.replace` is
atomic within a file system); a folder is built in a hidden temporary sibling and renamed likewise. JSON is
written strict: NaN and infinities become null (`json_ready`), so any JSON reader takes it.

Temporaries are named `.tmp-<host>-<pid>-*-<name>` and `.<name>.tmp-<host>-<pid>-*` (`temp_tag`: a hash of the
host name and the writer's process id), so that a writer killed by SIGKILL, whose temporary nothing could remove,
is recognised later: the next write of the same target removes the temporaries of processes of this host that no
longer run. Files and folders get the modes the umask gives (`tempfile` makes them private, 0600 and 0700, which
would keep a model server running as another user from reading an export).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ivus_tf.core.errors import InputError


def temp_tag(pid: int | None = None) -> str:
    """`<host>-<pid>`: this host (6 hex digits of a hash of its name) and a process id (default: this one)."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
    return f"{host}-{os.getpid() if pid is None else pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: Path, pattern: str) -> None:
    """Remove the entries of `folder` matching `pattern` (a regex with a group `pid`) made on this host by a
    process that no longer runs. Best effort: what cannot be listed or removed stays."""
    host = temp_tag(0).split("-")[0]
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        found = re.fullmatch(pattern, entry.name)
        if not found or found.group("host") != host or _alive(int(found.group("pid"))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (/proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: Path, folder: bool) -> None:
    """Give `path` the mode a plain `open` or `mkdir` would have (0666 or 0777 less the umask)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` whose name ends in `path`'s name (Keras picks a format by the suffix);
    when the block succeeds the file there replaces `path`, when it fails it is removed. `durable`: fsync the file
    and the folder, so the new content survives a power cut (the grid's ledger)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, rf"\.tmp-(?P<host>[0-9a-f]{{6}})-(?P<pid>\d+)-.*-{re.escape(path.name)}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{temp_tag()}-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    public_mode(tmp, folder=False)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> Path:
    """Write `data` to `path` atomically (`atomic_file`)."""
    with atomic_file(path, durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically (`atomic_file`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable)


def json_ready(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays unwrapped, tuples as lists, keys as strings, NaN and infinities
    as None (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value: Any, indent: int | None = 1, default=None) -> str:
    """`value` as strict JSON text (`json_ready`) ending in a newline; `default` as in `json.dumps`."""
    return json.dumps(json_ready(value), indent=indent, allow_nan=False, default=default) + "\n"


def atomic_write_json(path: str | os.PathLike, value: Any, indent: int | None = 1, default=None) -> Path:
    """Write `value` as strict JSON (`json_text`) to `path` atomically."""
    return atomic_write_text(path, json_text(value, indent, default))


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool, marker: str, kind: str,
                     inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse an output folder whose replacement would destroy something else: one that is or holds one of
    `inputs`; an existing one without `overwrite`; a file; a non-empty folder that is not an earlier output of
    this `kind` (which holds the file `marker`)."""
    out_dir = Path(out_dir)
    out_real = Path(os.path.realpath(out_dir))
    for path in inputs:
        if Path(os.path.realpath(path)).is_relative_to(out_real):
            raise InputError(f"{out_dir}: is or holds the input {path}; replacing it would delete the input, "
                             "choose another output folder")
    if not out_dir.exists():
        return
    if not overwrite:
        raise InputError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    if any(out_dir.iterdir()) and not (out_dir / marker).is_file():
        raise InputError(f"{out_dir}: not empty and not a {kind} (no {marker}); refusing to replace it")


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success it replaces `out_dir`, on error it is removed."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InputError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent,
                             rf"\.{re.escape(out_dir.name)}\.(tmp|old)-(?P<host>[0-9a-f]{{6}})-(?P<pid>\d+)-.*")
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{temp_tag()}-", dir=out_dir.parent))
    try:
        public_mode(tmp_dir, folder=True)
        yield tmp_dir
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{temp_tag()}-", dir=out_dir.parent))
            os.replace(out_dir, trash / out_dir.name)
            os.replace(tmp_dir, out_dir)
            _remove_replaced(trash, out_dir)
        else:
            os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _remove_replaced(trash: Path, out_dir: Path) -> None:
    """Delete the replaced folder; if that fails, say where it is (one warning line) instead of leaving it
    silently (the next write of `out_dir` tries again once this process has ended)."""
    def writable_and_retry(function, path, _):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            function(path)

    shutil.rmtree(trash, onerror=writable_and_retry)
    if trash.exists():
        print(f"warning: could not delete the replaced {out_dir} (moved to {trash}); delete it by hand",
              file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block and yield True: one process at a
    time. With `blocking=False`, yield False at once (holding nothing) when another process holds it. The kernel
    drops the lock when its holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
