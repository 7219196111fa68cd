"""TensorBoard extras for training: contour images of validation frames, the learning rate, and HParams.

Next to Keras' own `keras.callbacks.TensorBoard(log_dir)` (scalars in `log_dir/train` and `log_dir/validation`):

* `ContourImages`: every N epochs (and at the last), a few fixed validation frames at the model's input size with
  the true contours (green, dashed) and the predicted ones (calcium red, lumen yellow, vessel/EEM cyan), one image
  tag per task ("validation/calcium", "validation/wall_lumen"), in `log_dir/images`. Seeing the contours move is
  the quickest check that a run learns what the Dice curve claims.
* `LearningRateLogger`: Keras 3.15's TensorBoard callback ALREADY writes the optimizer's learning rate at each
  epoch end as `epoch_learning_rate` in `log_dir/train` (`TensorBoard._collect_learning_rate`), so this callback is
  not needed for TensorBoard. It puts the same value into `logs["learning_rate"]` so `History`, `CSVLogger` and the
  run's own history record it too (the TensorBoard callback then writes that same value; no duplicate tag).
* `write_hparams`: the run's hyperparameters and final metrics for the HParams dashboard; `write_hparams_config`:
  the experiment config of a grid, in the grid's parent folder.

Everything here runs with the TensorFlow backend (`tf.summary`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import keras
import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.core.vocab import check_task
from ivus_tf.data.pipeline import PipelineConfig, make_eval_dataset

tf = import_tensorflow()
from tensorboard.plugins.hparams import api as hp  # noqa: E402  (after the quiet TensorFlow import)

__all__ = ["COLORS", "ContourImages", "LearningRateLogger", "contour_overlay", "current_learning_rates",
           "select_frames", "write_hparams", "write_hparams_config"]

COLORS = {"truth": (0, 255, 0), "calcium": (255, 0, 0), "lumen": (255, 255, 0), "vessel": (0, 255, 255)}  # RGB
DASH_PX = (3, 2)  # pixels on, pixels off along a true contour
LEGEND = {"calcium": "green dashed: true calcium; red: predicted calcium",
          "wall_lumen": "green dashed: true lumen and vessel (EEM); yellow: predicted lumen; cyan: predicted vessel"}


# ---------------------------------------------------------------------------------------------- contour images

def _contours(mask: np.ndarray) -> list[np.ndarray]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :] for c in found]  # (x, y) points, every contour pixel


def _draw(canvas: np.ndarray, mask: np.ndarray, color, dashed: bool) -> None:
    for points in _contours(mask):
        if dashed:
            on = np.arange(len(points)) % sum(DASH_PX) < DASH_PX[0]
            canvas[points[on, 1], points[on, 0]] = color
        else:
            cv2.polylines(canvas, [points.reshape(-1, 1, 2).astype(np.int32)], True, color, 1)


def contour_overlay(image: np.ndarray, truth: np.ndarray | None, predicted: np.ndarray, task: str) -> np.ndarray:
    """uint8 RGB [H, W, 3]: a gray frame (float in [0, 1] or uint8, [H, W] or [H, W, 1]) with predicted contours
    (solid) and true contours (green, dashed, drawn on top so both stay visible where they meet).

    calcium: label 1 (red); wall_lumen: the lumen (label 1, yellow) and the vessel, i.e. the external elastic
    membrane around labels 1 | 2 (cyan). `truth` None draws the prediction only.
    """
    gray = np.asarray(image)
    gray = gray[..., 0] if gray.ndim == 3 else gray
    if gray.dtype != np.uint8:
        gray = np.clip(np.round(gray * 255.0), 0, 255).astype(np.uint8)
    canvas = np.repeat(gray[..., None], 3, axis=-1)
    if task == "calcium":
        regions = [(lambda m: m == 1, COLORS["calcium"])]
    elif task == "wall_lumen":
        regions = [(lambda m: m != 0, COLORS["vessel"]), (lambda m: m == 1, COLORS["lumen"])]
    else:
        check_task(task)
    for select, color in regions:
        _draw(canvas, select(np.asarray(predicted)), color, dashed=False)
    if truth is not None:
        for select, _ in regions:
            _draw(canvas, select(np.asarray(truth)), COLORS["truth"], dashed=True)
    return canvas


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

    Per task, among the frames carrying its label: one frame per case in turn (spread over cases); within a case,
    calcium frames with the largest calcium area first (frames with calcium before calcium-free ones), wall-lumen
    frames in stored order. Returns {"images": float32 [K, S, S, 1], "targets": {task: int32 [K, S, S]},
    "frames": {task: [row in images, ...]}, "ids": [(case_id, frame_id), ...]} with K <= max_frames * len(tasks).
    Two passes over the eval pipeline: the first reads only labels, the second keeps the chosen frames.
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

    The frames (`select_frames`) are read once, at construction; each write is one forward pass on them
    (`model(images, training=False)`), so its cost is that of a small batch.
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


# ----------------------------------------------------------------------------------------------- learning rate

def current_learning_rates(optimizer) -> dict:
    """{"learning_rate": value} of a Keras optimizer (or {"learning_rate_<name>": value} per inner optimizer),
    unwrapping `LossScaleOptimizer`, as Keras' TensorBoard callback does; a schedule gives its current value."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if hasattr(optimizer, "optimizers"):
        return {f"learning_rate_{opt.name}": float(keras.ops.convert_to_numpy(opt.learning_rate))
                for opt in optimizer.optimizers}
    return {"learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate))}


class LearningRateLogger(keras.callbacks.Callback):
    """Put the optimizer's current learning rate into `logs` at each epoch end (History, CSVLogger).

    Not needed for TensorBoard: Keras 3.15's TensorBoard callback writes `epoch_learning_rate` itself.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.model.optimizer is not None:
            logs.update(current_learning_rates(self.model.optimizer))


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

    `hparams` values become str/bool/int/float (tuples and lists "a,b", None "None", other objects str).
    `metrics` is {name: number} (nested mappings allowed, keys joined with "/"; None is NaN), written as scalars at
    `step` in `log_dir` itself, where the dashboard finds them as metrics of this run; the Keras TensorBoard
    callback's scalars in `log_dir/train` and `log_dir/validation` show up as metrics too (groups "train",
    "validation"). `trial_id` names the session group (default: a hash of the hparams, which groups repeats with
    identical hyperparameters).

    No experiment config is written here on purpose: TensorBoard uses the FIRST `hparams_config` it finds under its
    log dir (tensorboard/plugins/hparams/backend_context.py, `_find_experiment_tag`), so a per-run config would
    describe one run's values only. Without one, the dashboard infers the experiment from every run's hparams
    (domains from all values seen), which is the whole-grid view; `write_hparams_config` writes an explicit one.
    """
    values = {str(k): _hparam_value(v) for k, v in hparams.items()}
    scalars = _flat_metrics(metrics)
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams(values, trial_id=trial_id)
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value, step=step)
    writer.close()


def write_hparams_config(parent_dir, hparams: Sequence[Mapping], metric_names: Sequence[str]) -> None:
    """The HParams experiment config of a grid of runs under `parent_dir`: one call, in the parent folder.

    `hparams` holds every run's hyperparameter dict (as given to `write_hparams`); each hyperparameter gets a
    discrete domain of all its values (numbers as numbers when every value is one) and `metric_names` the metric
    tags (as written by `write_hparams`) the dashboard shows, in that order.
    """
    values: dict[str, list] = {}
    for run in hparams:
        for name, value in run.items():
            values.setdefault(str(name), []).append(_hparam_value(value))
    declared = []
    for name, found in values.items():
        if all(isinstance(v, bool) for v in found):
            domain = hp.Discrete(sorted(set(found)))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in found):
            domain = hp.Discrete(sorted({float(v) for v in found}))
        else:
            domain = hp.Discrete(sorted({str(v) for v in found}))
        declared.append(hp.HParam(name, domain))
    writer = tf.summary.create_file_writer(str(parent_dir))
    with writer.as_default():
        hp.hparams_config(hparams=declared, metrics=[hp.Metric(tag) for tag in metric_names])
    writer.close()
