"""Write validated frames into a records folder, atomically.

`write_records` is the one place that lays out `DIR/cases/*.tfrecord` and `DIR/index.json` (format in
`tfrecords_builder.index`). Output goes to a hidden temporary sibling folder that is renamed to DIR only when
everything is written (`ivus_tf.core.atomic.atomic_output_dir`), so an interrupted or failed build leaves no
folder that looks complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from ivus_tf.core.atomic import atomic_output_dir
from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.core.version import __version__
from ivus_tf.core.vocab import TASKS
from tfrecords_builder.features import encode_frame
from tfrecords_builder.index import BUILDER_VERSION, CASES_DIR, INDEX_NAME, sha256_file


def _shard_names(case_id: str, shards: int) -> list[str]:
    if shards == 1:
        return [f"{CASES_DIR}/{case_id}.tfrecord"]
    return [f"{CASES_DIR}/{case_id}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]


def write_case(tmp_dir: Path, case_id: str, frames: list[Mapping], shards_per_case: int = 1) -> dict:
    """Write one case's frames (dicts in the `iterate_frames` form) into `tmp_dir`; return its index entry."""
    tf = import_tensorflow()
    if not frames:
        raise InputError(f"case {case_id!r}: no frames")
    shards = max(1, min(int(shards_per_case), len(frames)))
    (tmp_dir / CASES_DIR).mkdir(exist_ok=True)
    names = _shard_names(case_id, shards)
    bounds = [round(i * len(frames) / shards) for i in range(shards + 1)]
    files = []
    for name, start, stop in zip(names, bounds[:-1], bounds[1:]):
        with tf.io.TFRecordWriter(str(tmp_dir / name)) as writer:
            for frame in frames[start:stop]:
                writer.write(encode_frame({**frame, "case_id": case_id}))
        files.append({"name": name, "sha256": sha256_file(tmp_dir / name), "frames": stop - start,
                      "bytes": (tmp_dir / name).stat().st_size})
    task_frames = {task: sum(f.get(f"{task}_mask") is not None for f in frames) for task in TASKS}
    return {
        "frames": len(frames),
        "tasks": [task for task in TASKS if task_frames[task]],
        "task_frames": task_frames,
        "pixel_spacing_mm": sorted({float(f["pixel_spacing_mm"]) for f in frames}),
        "image_size": sorted({tuple(int(n) for n in f["image"].shape[:2]) for f in frames}),
        "files": files,
    }


def write_index(tmp_dir: Path, cases: Mapping[str, dict], extra: Mapping | None = None) -> dict:
    index = {
        "builder_version": BUILDER_VERSION,
        "package_version": __version__,
        "num_frames": sum(case["frames"] for case in cases.values()),
        **(dict(extra) if extra else {}),
        "cases": {case_id: cases[case_id] for case_id in sorted(cases)},
    }
    (tmp_dir / INDEX_NAME).write_text(json.dumps(index, indent=1, default=list) + "\n", encoding="utf-8")
    return index


def write_records(
    frames_by_case: Mapping[str, Iterable[Mapping]],
    out_dir: str | Path,
    shards_per_case: int = 1,
    overwrite: bool = False,
    extra_index: Mapping | None = None,
) -> dict:
    """Write in-memory frames, grouped by case id, into the records folder `out_dir`; return the index.

    Frames must already be validated and normalised (uint8 image, 0/1 calcium, 0/1/2 wall_lumen).
    """
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp_dir:
        cases = {
            case_id: write_case(tmp_dir, case_id, list(frames), shards_per_case)
            for case_id, frames in frames_by_case.items()
        }
        index = write_index(tmp_dir, cases, extra_index)
    return index
