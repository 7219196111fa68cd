"""Reading frames back from a records folder: file lists by case, the per-frame parser, and a numpy iterator."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from tfrecords_builder import features as F
from tfrecords_builder.index import read_index

tf = import_tensorflow()


def record_files(records_dir: str | Path, case_ids: Iterable[str] | None = None,
                 index: dict | None = None) -> list[str]:
    """Record file paths of `case_ids` (all cases when None), in the given case order."""
    records_dir = Path(records_dir)
    index = read_index(records_dir) if index is None else index
    cases = index["cases"]
    case_ids = sorted(cases) if case_ids is None else list(case_ids)
    unknown = [c for c in case_ids if c not in cases]
    if unknown:
        raise InputError(f"{records_dir}: unknown case id(s) {', '.join(map(repr, unknown[:5]))}")
    return [str(records_dir / entry["name"]) for c in case_ids for entry in cases[c]["files"]]


def _decode_mask(png: tf.Tensor, present: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    return tf.cond(
        present > 0,
        lambda: tf.io.decode_png(png, channels=1),
        lambda: tf.zeros(tf.stack([height, width, 1]), tf.uint8),
    )


def parse_frame(serialized: tf.Tensor) -> dict:
    """Parse one serialized frame into tensors (graph-safe, for `tf.data.Dataset.map`).

    Returns `image`, `calcium_mask`, `wall_lumen_mask` as (H, W, 1) uint8 (an absent mask is zeros),
    `has_calcium` and `has_wall_lumen` as float32 0/1, `case_id`, `frame_id` (string), `pixel_spacing_mm`.
    """
    ex = tf.io.parse_single_example(serialized, F.feature_spec())
    height = tf.cast(ex[F.IMAGE_HEIGHT], tf.int32)
    width = tf.cast(ex[F.IMAGE_WIDTH], tf.int32)
    image = tf.io.decode_png(ex[F.IMAGE_PNG], channels=1)
    image = tf.ensure_shape(image, [None, None, 1])
    return {
        "case_id": ex[F.CASE_ID],
        "frame_id": ex[F.FRAME_ID],
        "pixel_spacing_mm": ex[F.PIXEL_SPACING_MM],
        "image": image,
        "calcium_mask": _decode_mask(ex[F.CALCIUM_PNG], ex[F.CALCIUM_PRESENT], height, width),
        "wall_lumen_mask": _decode_mask(ex[F.WALL_LUMEN_PNG], ex[F.WALL_LUMEN_PRESENT], height, width),
        "has_calcium": tf.cast(ex[F.CALCIUM_PRESENT], tf.float32),
        "has_wall_lumen": tf.cast(ex[F.WALL_LUMEN_PRESENT], tf.float32),
    }


def iterate_frames(records_dir: str | Path, case_ids: Iterable[str] | None = None) -> Iterator[dict]:
    """Yield frames at their original resolution as numpy dicts, case by case, in stored order.

    Keys: `case_id`, `frame_id` (str), `image` (H, W uint8), `calcium_mask` and `wall_lumen_mask`
    (H, W uint8, or None when the frame carries no such label), `pixel_spacing_mm` (float).
    """
    files = record_files(records_dir, case_ids)
    dataset = tf.data.TFRecordDataset(files).map(parse_frame, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for frame in dataset.as_numpy_iterator():
        yield {
            "case_id": frame["case_id"].decode(),
            "frame_id": frame["frame_id"].decode(),
            "image": frame["image"][..., 0],
            "calcium_mask": frame["calcium_mask"][..., 0] if frame["has_calcium"] else None,
            "wall_lumen_mask": frame["wall_lumen_mask"][..., 0] if frame["has_wall_lumen"] else None,
            "pixel_spacing_mm": float(np.float32(frame["pixel_spacing_mm"])),
        }
