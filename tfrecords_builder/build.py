"""`build`: turn a manifest into a records folder, one case at a time.

    python -m tfrecords_builder build --manifest PATH --out DIR [--shards-per-case K] [--overwrite] [--allow-unlabeled]

The manifest is validated completely before any pixel is read (`manifest.read_manifest`). Cases are then written
in sorted order, frames in manifest order within a case; only one case's frames are in memory at a time. Output
goes through `ivus_tf.core.atomic.atomic_output_dir`, so any error (a corrupt image in the last case included)
leaves neither DIR nor a temporary folder behind. The index records the manifest's absolute path and sha256
(`source_manifest`, `source_manifest_sha256`) so a records folder can be traced back to its input.

`--overwrite` replaces an existing records folder only: a folder that is not empty and has no index.json, or
one that holds the manifest or any file it references, is refused, since replacing it would delete user data.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

from ivus_tf.core.atomic import atomic_output_dir, check_output_dir
from ivus_tf.core.errors import InputError, positive_int_arg
from ivus_tf.core.progress import progress
from ivus_tf.core.vocab import TASKS
from tfrecords_builder.images import load_image, load_mask
from tfrecords_builder.index import INDEX_NAME, sha256_file
from tfrecords_builder.manifest import ManifestRow, read_manifest
from tfrecords_builder.writer import write_case, write_index


def build_records(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    shards_per_case: int = 1,
    overwrite: bool = False,
    allow_unlabeled: bool = False,
) -> dict:
    """Validate `manifest_path`, write its frames as TFRecords into `out_dir`, and return the index.

    The returned index is the JSON form written to `out_dir/index.json` (lists, not tuples), so it compares equal
    to what `tfrecords_builder.index.read_index` reads back.
    """
    if int(shards_per_case) < 1:
        raise InputError(f"shards_per_case must be >= 1, got {shards_per_case}")
    manifest_path, out_dir = Path(manifest_path), Path(out_dir)
    rows = read_manifest(manifest_path, allow_unlabeled=allow_unlabeled)
    check_output_dir(out_dir, overwrite, INDEX_NAME, "records folder", [manifest_path, *_input_files(rows)])
    rows = sorted(rows, key=lambda row: row.case_id)  # stable: manifest order within a case
    extra = {
        "source_manifest": os.path.abspath(manifest_path),
        "source_manifest_sha256": sha256_file(manifest_path),
    }
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp_dir:
        cases = {}
        frames_seen = progress(rows, total=len(rows), desc="build", unit="frames")
        for case_id, case_rows in itertools.groupby(frames_seen, key=lambda row: row.case_id):
            frames = [load_frame(row, manifest_path) for row in case_rows]
            cases[case_id] = write_case(tmp_dir, case_id, frames, shards_per_case)
        index = write_index(tmp_dir, cases, extra)
    return json.loads(json.dumps(index, default=list))


def load_frame(row: ManifestRow, manifest_path: Path) -> dict:
    """Read and normalise one row's image and masks into the `iterate_frames` form; errors name the row."""
    try:
        image = load_image(row.image)
        masks = {task: _load_optional_mask(row.mask(task), task, image.shape) for task in TASKS}
    except InputError as error:
        raise InputError(f"{manifest_path} row {row.row}: {error}") from error
    return {
        "case_id": row.case_id,
        "frame_id": row.frame_id,
        "image": image,
        "calcium_mask": masks["calcium"],
        "wall_lumen_mask": masks["wall_lumen"],
        "pixel_spacing_mm": row.pixel_spacing_mm,
    }


def _load_optional_mask(path: Path | None, task: str, image_shape: tuple[int, int]):
    return None if path is None else load_mask(path, task, image_shape)


def _input_files(rows: list[ManifestRow]) -> list[Path]:
    return [path for row in rows for path in (row.image, row.calcium_mask, row.wall_lumen_mask) if path is not None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest CSV (see tfrecords_builder.manifest)")
    parser.add_argument("--out", required=True, help="records folder to create")
    parser.add_argument("--shards-per-case", type=positive_int_arg, default=1, metavar="K",
                        help="record files per case (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing records folder")
    parser.add_argument("--allow-unlabeled", action="store_true",
                        help="accept rows with no mask at all (stored with neither label)")


def run(args: argparse.Namespace) -> int:
    index = build_records(args.manifest, args.out, args.shards_per_case, args.overwrite, args.allow_unlabeled)
    cases = index["cases"]
    task_frames = {task: sum(case["task_frames"].get(task, 0) for case in cases.values()) for task in TASKS}
    print(f"wrote {len(cases)} cases, {index['num_frames']} frames to {args.out}")
    print("frames per task: " + ", ".join(f"{task} {count}" for task, count in task_frames.items()))
    return 0
