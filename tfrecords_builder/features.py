"""The TFRecord schema: every feature key, and the encoder/parser pair for one frame.

One `tf.train.Example` per frame. Image and masks are PNG-encoded at the frame's ORIGINAL resolution (metrics are
computed there). A frame carries zero, one or both task labels; an absent label is stored as empty bytes with its
`*/present` flag 0, so the parser has a fixed schema.

Masks in records are normalised to the label values of `ivus_tf.core.vocab`: calcium 0/1, wall_lumen
0 background / 1 lumen / 2 vessel wall.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.core.vocab import CALCIUM, WALL_LUMEN

CASE_ID = "case_id"
FRAME_ID = "frame_id"
IMAGE_PNG = "image/png"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
PIXEL_SPACING_MM = "pixel_spacing_mm"
CALCIUM_PNG = "calcium/png"
CALCIUM_PRESENT = "calcium/present"
WALL_LUMEN_PNG = "wall_lumen/png"
WALL_LUMEN_PRESENT = "wall_lumen/present"

MASK_KEYS = {CALCIUM: (CALCIUM_PNG, CALCIUM_PRESENT), WALL_LUMEN: (WALL_LUMEN_PNG, WALL_LUMEN_PRESENT)}


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (lossless)."""
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array, dtype=np.uint8))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """2-D uint8 array from PNG bytes (numpy side; the tf.data side uses `tf.io.decode_png`)."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError("not a decodable PNG")
    return array


def encode_frame(frame: Mapping[str, Any]) -> bytes:
    """Serialize one frame dict (the `iterate_frames` form) to `tf.train.Example` bytes.

    `frame` holds `case_id`, `frame_id`, `image` (H, W uint8), `calcium_mask` and `wall_lumen_mask`
    (H, W uint8 or None, already normalised) and `pixel_spacing_mm`.
    """
    tf = import_tensorflow()
    train = tf.train

    def _bytes(value: bytes) -> Any:
        return train.Feature(bytes_list=train.BytesList(value=[value]))

    def _int(value: int) -> Any:
        return train.Feature(int64_list=train.Int64List(value=[int(value)]))

    image = frame["image"]
    height, width = image.shape
    feature = {
        CASE_ID: _bytes(str(frame["case_id"]).encode()),
        FRAME_ID: _bytes(str(frame["frame_id"]).encode()),
        IMAGE_PNG: _bytes(encode_png(image)),
        IMAGE_HEIGHT: _int(height),
        IMAGE_WIDTH: _int(width),
        PIXEL_SPACING_MM: train.Feature(float_list=train.FloatList(value=[float(frame["pixel_spacing_mm"])])),
    }
    for task, (png_key, present_key) in MASK_KEYS.items():
        mask = frame.get(f"{task}_mask")
        if mask is not None and mask.shape != image.shape:
            raise ValueError(f"{task} mask shape {mask.shape} differs from image shape {image.shape}")
        feature[png_key] = _bytes(b"" if mask is None else encode_png(mask))
        feature[present_key] = _int(mask is not None)
    return train.Example(features=train.Features(feature=feature)).SerializeToString()


def feature_spec() -> dict:
    """The `tf.io.parse_single_example` spec for a frame record."""
    tf = import_tensorflow()
    fixed = tf.io.FixedLenFeature
    return {
        CASE_ID: fixed([], tf.string),
        FRAME_ID: fixed([], tf.string),
        IMAGE_PNG: fixed([], tf.string),
        IMAGE_HEIGHT: fixed([], tf.int64),
        IMAGE_WIDTH: fixed([], tf.int64),
        PIXEL_SPACING_MM: fixed([], tf.float32),
        CALCIUM_PNG: fixed([], tf.string),
        CALCIUM_PRESENT: fixed([], tf.int64),
        WALL_LUMEN_PNG: fixed([], tf.string),
        WALL_LUMEN_PRESENT: fixed([], tf.int64),
    }
