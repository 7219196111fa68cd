"""`index.json`: what a records folder holds, case by case.

Layout of a records folder::

    DIR/index.json
    DIR/cases/<case_id>.tfrecord                      (or <case_id>-00000-of-00004.tfrecord with K shards)

`index.json`::

    {"builder_version": 1, "package_version": "0.1.0", "num_frames": 240,
     "cases": {"<case_id>": {"frames": 12, "tasks": ["calcium", "wall_lumen"],
                             "task_frames": {"calcium": 12, "wall_lumen": 6},
                             "pixel_spacing_mm": [0.02], "image_size": [[500, 500]],
                             "files": [{"name": "cases/<case_id>.tfrecord", "sha256": "...", "frames": 12,
                                        "bytes": 81234}]}}}

`pixel_spacing_mm` and `image_size` list the distinct values among the case's frames (one for a normal pullback).

Checks: `read_index` compares every record file's size with `bytes` (a stat per file: a truncated copy is caught
before TensorFlow reads it, whose `DataLossError` names no file); `verify_records` re-hashes the files against
`sha256` once and remembers, in a cache folder keyed by each file's size and modification time, what it verified,
so training checks its records every time at the cost of a stat per file (hashing runs at ~0.5 GB/s here).
`records_fingerprint` is one hash of what the index says about every case and file: a run keeps it to notice
records rebuilt under the same path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ivus_tf.core.atomic import atomic_write_json
from ivus_tf.core.errors import InputError

BUILDER_VERSION = 1  # the records format; a reader refuses any other
INDEX_NAME = "index.json"
CASES_DIR = "cases"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_index(records_dir: str | Path, verify_checksums: bool = False) -> dict:
    """Read and check `DIR/index.json`; with `verify_checksums`, also re-hash every record file."""
    records_dir = Path(records_dir)
    path = records_dir / INDEX_NAME
    if not path.is_file():
        raise InputError(f"{records_dir}: no {INDEX_NAME}; not a records folder written by tfrecords_builder build")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable index ({error})") from error
    version = index.get("builder_version") if isinstance(index, dict) else None
    if version != BUILDER_VERSION:
        raise InputError(f"{path}: builder_version {version!r}, this package reads version {BUILDER_VERSION}; rebuild")
    if not isinstance(index.get("cases"), dict) or not index["cases"]:
        raise InputError(f"{path}: no cases listed")
    for case_id, case in index["cases"].items():
        for entry in case.get("files", []):
            file_path = records_dir / entry["name"]
            if not file_path.is_file():
                raise InputError(f"{file_path}: record file of case {case_id!r} is missing")
            size = file_path.stat().st_size
            if "bytes" in entry and size != entry["bytes"]:
                raise InputError(f"{file_path}: {size} bytes but {INDEX_NAME} says {entry['bytes']}; the file is "
                                 "truncated or was changed: rebuild the records (python -m tfrecords_builder build)")
            if verify_checksums and sha256_file(file_path) != entry["sha256"]:
                raise InputError(_changed(file_path))
    return index


def _changed(path: Path) -> str:
    return (f"{path}: sha256 differs from {INDEX_NAME}; the file is corrupt or was changed: rebuild the records "
            "(python -m tfrecords_builder build)")


def verify_records(records_dir: str | Path, index: dict, cache_dir: str | Path | None = None, log=None) -> int:
    """Check every record file against its sha256 in `index`; `InputError` naming the first that differs.

    Files verified before with the same size and modification time (remembered in `cache_dir`, one JSON per
    records folder) are not hashed again; a cache that cannot be read or written only costs the hashing. Returns
    the number of files hashed. `log(text)` hears about a verification that hashes anything.
    """
    records_dir = Path(records_dir).resolve()
    cache_path = None
    cached: dict = {}
    if cache_dir is not None:
        key = hashlib.sha256(str(records_dir).encode()).hexdigest()[:16]
        cache_path = Path(cache_dir) / f"{key}.json"
        try:
            cached = json.loads(cache_path.read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            cached = {}
    todo, verified = [], {}
    for case in index["cases"].values():
        for entry in case.get("files", []):
            path = records_dir / entry["name"]
            stat = path.stat()
            stamp = [stat.st_size, stat.st_mtime_ns, entry["sha256"]]
            (verified.__setitem__(entry["name"], stamp) if cached.get(entry["name"]) == stamp
             else todo.append((path, entry, stamp)))
    if todo and log is not None:
        megabytes = sum(stamp[0] for _, _, stamp in todo) / 1e6
        log(f"verifying {len(todo)} record file(s) ({megabytes:.1f} MB) of {records_dir} against {INDEX_NAME}")
    for path, entry, stamp in todo:
        if sha256_file(path) != entry["sha256"]:
            raise InputError(_changed(path))
        verified[entry["name"]] = stamp
    if todo and cache_path is not None:
        try:
            atomic_write_json(cache_path, {"records": str(records_dir), "files": verified})
        except OSError:
            pass
    return len(todo)


def records_fingerprint(index: dict) -> str:
    """sha256 of what `index` says about every case and record file (sizes, frames, file checksums)."""
    return hashlib.sha256(json.dumps(index["cases"], sort_keys=True, default=list).encode()).hexdigest()

