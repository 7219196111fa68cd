"""Write a phantom dataset in the canonical manifest layout.

    OUT/manifest.csv                       one row per frame (see tfrecords_builder.manifest)
    OUT/images/<case_id>/<frame_id>.png    B-mode frame, uint8
    OUT/calcium/<case_id>/<frame_id>.png   0 / 255 (nonzero = calcium)
    OUT/wall_lumen/<case_id>/<frame_id>.png  0 background, 1 lumen, 2 vessel wall
    OUT/phantom.json                       preset, knobs, seed, and per case: frames with calcium, frame
                                           positions, and how it was rendered (scanner, tissue, annotator)

Each case is a pullback: frames are equally spaced along it (spacing drawn per case from `frame_spacing_mm`),
each at a random cardiac phase, all imaged by the case's scanner (so frame size and pixel spacing are per case;
the manifest has each frame's `pixel_spacing_mm`). Deterministic for a seed whatever the number of workers
(`render.py`).
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from ivus_tf.core.atomic import atomic_output_dir
from ivus_tf.core.errors import InputError
from ivus_tf.core.progress import progress
from ivus_tf.core.version import __version__
from ivus_tf.core.vocab import CALCIUM, TASKS, WALL_LUMEN
from tfrecords_builder.manifest import write_manifest
from tfrecords_builder.phantom.config import PRESETS, PhantomConfig
from tfrecords_builder.phantom.render import render_frame, sample_phantom_case

TASK_CHOICES = (*TASKS, "both")


def frame_tasks(task: str, disjoint: bool, frame_index: int) -> tuple:
    """Which labels a frame carries. With `disjoint`, frames alternate calcium / wall_lumen (as in the paper)."""
    if task != "both":
        return (task,)
    if disjoint:
        return (CALCIUM,) if frame_index % 2 == 0 else (WALL_LUMEN,)
    return TASKS


def _write_case(args) -> tuple:
    out_dir, config, seed, case_index, case_id, frames, task, disjoint = args
    pc = sample_phantom_case(config, seed, case_index, frames)
    rows, facts = [], {"frames_with_calcium": 0, "frame_z_mm": [], "render": pc.describe()}
    for sub in ("images", "calcium", "wall_lumen"):
        (out_dir / sub / case_id).mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        _, image, calcium, wall_lumen = render_frame(pc, i)
        z = pc.z_mm(i)
        frame_id = f"{i:04d}"
        tasks = frame_tasks(task, disjoint, i)
        row = {"case_id": case_id, "frame_id": frame_id, "image": f"images/{case_id}/{frame_id}.png",
               "pixel_spacing_mm": pc.scanner.pixel_spacing_mm}
        cv2.imwrite(str(out_dir / row["image"]), image)
        if CALCIUM in tasks:
            row["calcium_mask"] = f"calcium/{case_id}/{frame_id}.png"
            cv2.imwrite(str(out_dir / row["calcium_mask"]), calcium.astype(np.uint8) * 255)
        if WALL_LUMEN in tasks:
            row["wall_lumen_mask"] = f"wall_lumen/{case_id}/{frame_id}.png"
            cv2.imwrite(str(out_dir / row["wall_lumen_mask"]), wall_lumen)
        rows.append(row)
        facts["frames_with_calcium"] += int(calcium.any())
        facts["frame_z_mm"].append(round(z, 3))
    return case_id, rows, facts


def generate_dataset(out_dir, cases: int = 12, frames_per_case: int = 20, seed: int = 0, task: str = "both",
                     preset: str = "randomized", config: PhantomConfig | None = None, disjoint_tasks: bool = False,
                     workers: int = 1, overwrite: bool = False, case_prefix: str = "phantom") -> dict:
    """Generate `cases` pullbacks of `frames_per_case` frames into `out_dir` (atomically); return phantom.json."""
    if task not in TASK_CHOICES:
        raise InputError(f"unknown task {task!r}; valid tasks: {', '.join(TASK_CHOICES)}")
    if preset not in PRESETS:
        raise InputError(f"unknown phantom preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if cases < 1 or frames_per_case < 1:
        raise InputError(f"need at least one case and one frame per case, got {cases} x {frames_per_case}")
    config = PRESETS[preset] if config is None else config
    config.validate()
    case_ids = [f"{case_prefix}_{k:03d}" for k in range(cases)]
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        jobs = [(tmp, config, seed, k, case_ids[k], frames_per_case, task, disjoint_tasks) for k in range(cases)]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(progress(pool.map(_write_case, jobs), total=cases, desc="phantom", unit="case"))
        else:
            results = list(progress(map(_write_case, jobs), total=cases, desc="phantom", unit="case"))
        write_manifest(tmp / "manifest.csv", [row for _, rows, _ in results for row in rows])
        info = {
            "generator": "ivus_tf phantom", "package_version": __version__, "seed": seed, "preset": preset,
            "task": task, "disjoint_tasks": disjoint_tasks, "frames_per_case": frames_per_case,
            "config": dataclasses.asdict(config), "cases": {case_id: facts for case_id, _, facts in results},
        }
        (tmp / "phantom.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info
