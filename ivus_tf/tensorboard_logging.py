"""TensorBoard extras for training: contour images of validation frames and HParams.

Next to Keras' own TensorBoard callback (scalars and the learning rate in `log_dir/train`, `log_dir/validation`):
`ContourImages` draws true and predicted contours on a few fixed validation frames every N epochs, the quickest
check that a run learns what the Dice curve claims; `write_hparams` records the run for the HParams dashboard.
TensorFlow backend only (`tf.summary`). What appears where: docs/training.md#tensorboard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.data.pipeline import PipelineConfig, make_eval_dataset
from ivus_tf.overlay import LEGEND, render_overlay

tf = import_tensorflow()
from tensorboard.plugins.hparams import api as hp  # noqa: E402  (after the quiet TensorFlow import)

__all__ = ["ContourImages", "contour_overlay", "select_frames", "write_hparams"]


# ---------------------------------------------------------------------------------------------- contour images

def contour_overlay(image: np.ndarray, truth: np.ndarray | None, predicted: np.ndarray, task: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] of one task: predicted contours solid, true ones dashed green (`ivus_tf.overlay`)."""
    return render_overlay(image, {task: predicted}, {task: truth})


def _round_robin(candidates: list[tuple], case_order: Sequence[str], count: int) -> list[int]:
    """Indices of up to `count` candidates (case_id, sort key, index): one per case in turn, best key first."""
    per_case = {case: sorted((c for c in candidates if c[0] == case), key=lambda c: c[1:]) for case in case_order}
    picks, depth = [], 0
    while len(picks) < count and any(depth < len(found) for found in per_case.values()):
        for found in per_case.values():
            if depth < len(found) and len(picks) < count:
                picks.append(found[depth][2])
        depth += 1
    return sorted(picks)


def select_frames(records_dir, case_ids, tasks, image_size, max_frames=4) -> dict:
    """Up to `max_frames` validation frames per task, chosen deterministically, at the model's input size.

    Per task, one frame per case in turn (spread over cases); within a case, calcium frames with the largest calcium
    area first, wall-lumen frames in stored order. Returns {"images": float32 [K, S, S, 1], "targets": {task: int32
    [K, S, S]}, "frames": {task: [row in images, ...]}, "ids": [(case_id, frame_id), ...]}, K <= max_frames * tasks.
    """
    case_ids, tasks = list(case_ids), tuple(tasks)
    config = PipelineConfig(image_size=int(image_size), batch_size=32, tasks=tasks, cache=False)
    candidates = {task: [] for task in tasks}
    index = 0
    for _, targets, weights, metadata in make_eval_dataset(records_dir, case_ids, config, True).as_numpy_iterator():
        for i, case in enumerate(metadata["case_id"]):
            for task in tasks:
                if weights[task][i] > 0:
                    area = int(np.count_nonzero(targets[task][i])) if task == "calcium" else 0
                    candidates[task].append((case.decode(), -area, index))
            index += 1
    chosen = {task: _round_robin(candidates[task], case_ids, max_frames) for task in tasks}
    keep = sorted({i for rows in chosen.values() for i in rows})
    wanted = set(keep)
    images, kept_targets, ids, index = [], {task: [] for task in tasks}, [], 0
    for batch, targets, _, metadata in make_eval_dataset(records_dir, case_ids, config, True).as_numpy_iterator():
        for i in range(len(batch)):
            if index in wanted:
                images.append(batch[i])
                ids.append((metadata["case_id"][i].decode(), metadata["frame_id"][i].decode()))
                for task in tasks:
                    kept_targets[task].append(targets[task][i])
            index += 1
    row = {i: r for r, i in enumerate(keep)}
    return {"images": np.stack(images).astype(np.float32),
            "targets": {task: np.stack(found).astype(np.int32) for task, found in kept_targets.items()},
            "frames": {task: [row[i] for i in rows] for task, rows in chosen.items()}, "ids": ids}


class ContourImages(keras.callbacks.Callback):
    """Write validation frames with true and predicted contours to `log_dir/images` every `every_n_epochs` epochs
    and at the last epoch (also when training stops early), one image tag per task ("validation/<task>").

    The frames (`select_frames`) are read once, at construction; each write is one forward pass on them.
    """

    def __init__(self, log_dir, records_dir, case_ids, tasks, image_size, every_n_epochs=5, max_frames=4):
        super().__init__()
        if every_n_epochs < 1 or max_frames < 1:
            raise InputError(f"every_n_epochs and max_frames must be >= 1, got {every_n_epochs}, {max_frames}")
        self.log_dir = Path(log_dir) / "images"
        self.tasks = tuple(tasks)
        self.every_n_epochs = int(every_n_epochs)
        self.selection = select_frames(records_dir, case_ids, self.tasks, image_size, max_frames)
        self._writer = None
        self._last_epoch = self._written_epoch = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every_n_epochs == 0 or (last is not None and epoch + 1 == last):
            self.write(epoch)

    def on_train_end(self, logs=None):
        if self._last_epoch is not None and self._written_epoch != self._last_epoch:
            self.write(self._last_epoch)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, epoch: int) -> None:
        """Predict the chosen frames and write one image summary per task at step `epoch`."""
        images = self.selection["images"]
        outputs = self.model(images, training=False)
        if not isinstance(outputs, Mapping):
            outputs = {self.tasks[0]: outputs}
        writer = self._writer or tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default():
            for task in self.tasks:
                if task not in outputs:
                    raise InputError(f"ContourImages: the model has no output named {task!r}")
                predicted = np.argmax(keras.ops.convert_to_numpy(outputs[task]), axis=-1)
                rows = self.selection["frames"][task]
                if not rows:
                    continue
                overlays = np.stack([contour_overlay(images[r], self.selection["targets"][task][r], predicted[r],
                                                     task) for r in rows])
                names = ", ".join("/".join(self.selection["ids"][r]) for r in rows)
                tf.summary.image(f"validation/{task}", overlays, step=epoch, max_outputs=len(rows),
                                 description=f"{LEGEND[task]}. Frames: {names}.")
        writer.flush()
        self._written_epoch = epoch


# ----------------------------------------------------------------------------------------------------- hparams

def _hparam_value(value):
    """A value the HParams plugin takes (str, bool, int, float): None -> "None", sequences -> "a,b", else str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (tuple, list)):
        return ",".join(str(_hparam_value(v)) for v in value)
    return str(value)


def _flat_metrics(metrics: Mapping, prefix: str = "") -> dict:
    """{tag: float} from possibly nested {name: number}; nested keys join with "/"; None (null in JSON) is NaN."""
    flat = {}
    for name, value in metrics.items():
        tag = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flat_metrics(value, f"{tag}/"))
        elif value is None:
            flat[tag] = math.nan
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            flat[tag] = float(value)
        else:
            raise TypeError(f"metric {tag!r} must be a number, got {type(value).__name__} {value!r}")
    return flat


def write_hparams(log_dir, hparams: dict, metrics: dict, *, step: int = 0, trial_id: str | None = None) -> None:
    """Record a run for TensorBoard's HParams dashboard: its hyperparameters and final metrics, in `log_dir`.

    `hparams` values become str/bool/int/float (tuples and lists "a,b", None "None", other objects str). `metrics` is
    {name: number} (nested mappings joined with "/"; None is NaN), written as scalars at `step` in `log_dir` itself.
    `trial_id` names the session group (default: a hash of the hparams, grouping repeats). No experiment config is
    written on purpose: TensorBoard uses the first one it finds, so a per-run config would hide the rest of a grid.
    """
    values = {str(k): _hparam_value(v) for k, v in hparams.items()}
    scalars = _flat_metrics(metrics)
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams(values, trial_id=trial_id)
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value, step=step)
    writer.close()
