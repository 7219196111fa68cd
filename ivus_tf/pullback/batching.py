"""Predict's batches: consecutive frames of one size, as many as the memory allows.

`frame_bytes` estimates what one frame costs through an export: ~72 bytes per pixel at the frame's own size
(float copies, each task's probabilities resized back, argmax, outputs) plus the model's activations at its input
size, ~700 bytes per input pixel for a full-width (~40 M parameter) model, scaled by the width (channels grow
with the width, parameters with its square); an ensemble or --tta adds ~160 bytes per pixel (float64 sums and
squares of every pass's probabilities, the uncertainty maps). From the issue's peaks: one 6000x6000 frame
3.2 GB, three 8.5 GB (full-width U-Net at 256x256; ~0.9 GB of that is the process and the model).
`BatchLimit` cuts the batch of a frame size to what fits in half the memory, with one warning per size, and
refuses a frame that alone needs more than the whole memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

from ivus_tf.core.errors import InputError
from ivus_tf.core.memory import gigabytes, memory_bytes

BYTES_PER_FRAME_PIXEL, BYTES_PER_MODEL_PIXEL, BYTES_PER_ENSEMBLE_PIXEL = 72, 700, 160
FULL_WIDTH_PARAMETERS = 41.5e6


def frame_bytes(shape: Sequence[int], model) -> int:
    """Bytes one frame of `shape` (H, W) needs through `model` (an export or ensemble; module docstring)."""
    info = getattr(model, "info", None) or {}
    if info.get("members"):  # an ensemble (`ivus_tf.ensemble`): its members are trained alike
        info = info["members"][0] or {}
    input_size = info.get("model_input_size") or getattr(model, "model_input_size", None) or (256, 256)
    width = min(1.0, math.sqrt((info.get("parameters") or FULL_WIDTH_PARAMETERS) / FULL_WIDTH_PARAMETERS))
    model_bytes = BYTES_PER_MODEL_PIXEL * width * math.prod(int(n) for n in input_size)
    per_pixel = BYTES_PER_FRAME_PIXEL + (BYTES_PER_ENSEMBLE_PIXEL if getattr(model, "passes", 1) > 1 else 0)
    return int(per_pixel * int(shape[0]) * int(shape[1]) + model_bytes)


class BatchLimit:
    """`limit(shape)`: the batch for frames of `shape`, at most `batch_size`, within `budget_bytes` (default half
    of `total_bytes`, default this machine's memory); `warn(key, message)` hears once per reduced size."""

    def __init__(self, model, batch_size: int, warn, budget_bytes: int | None = None, total_bytes: int | None = None):
        self.model, self.batch_size, self.warn = model, int(batch_size), warn
        self.total = total_bytes or memory_bytes() or 1 << 62
        self.budget = budget_bytes or self.total // 2
        self.limits: dict[tuple, int] = {}

    def __call__(self, shape) -> int:
        shape = tuple(shape)
        if shape not in self.limits:
            need = frame_bytes(shape, self.model)
            size = f"{shape[1]}x{shape[0]} (WxH)"
            if need > self.total:
                raise InputError(f"frames of {size} need about {gigabytes(need)} each through the model, more than "
                                 f"this machine's {gigabytes(self.total)}; downsample the frames first")
            self.limits[shape] = min(self.batch_size, max(1, self.budget // need))
            if self.limits[shape] < self.batch_size:
                self.warn(f"memory:{shape}", f"frames of {size} need about {gigabytes(need)} each through the "
                                             f"model: --batch-size {self.batch_size} reduced to {self.limits[shape]} "
                                             f"to stay within {gigabytes(self.budget)} of memory")
        return self.limits[shape]


def batches(frames: Iterable, batch_size: int, limit=None) -> Iterator[list]:
    """Consecutive frames in lists of at most `batch_size` (or `limit(frame shape)`), cut where the frame size
    changes (one size a call)."""
    batch: list = []
    size = batch_size
    for frame in frames:
        if batch and frame.image.shape != batch[0].image.shape:
            yield batch
            batch = []
        if not batch:
            size = limit(frame.image.shape) if limit is not None else batch_size
        batch.append(frame)
        if len(batch) == size:  # at once: the reader never runs more than one batch ahead of the model
            yield batch
            batch = []
    if batch:
        yield batch
