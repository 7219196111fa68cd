"""`index.json`: what a records folder holds, case by case.

Layout of a records folder::

    DIR/index.json
    DIR/cases/<case_id>.tfrecord                      (or <case_id>-00000-of-00004.tfrecord with K shards)

`index.json`::

    {"builder_version": 1, "package_version": "0.1.0", "num_frames": 240,
     "cases": {"<case_id>": {"frames": 12, "tasks": ["calcium", "wall_lumen"],
                             "task_frames": {"calcium": 12, "wall_lumen": 6},
                             "pixel_spacing_mm": [0.02], "image_size": [[500, 500]],
                             "files": [{"name": "cases/<case_id>.tfrecord", "sha256": "...", "frames": 12}]}}}

`pixel_spacing_mm` and `image_size` list the distinct values among the case's frames (one for a normal pullback).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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
            if verify_checksums and sha256_file(file_path) != entry["sha256"]:
                raise InputError(f"{file_path}: sha256 differs from {INDEX_NAME}; the file is corrupt or was changed")
    return index

