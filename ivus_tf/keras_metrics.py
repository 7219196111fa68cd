"""Streaming Keras metrics for monitoring and model selection: a task's Dice over a whole epoch, pooled or per frame.

`TaskDice` sums intersections and totals of the argmax prediction over every labelled frame of the epoch (frame
weight > 0) and reports the pooled Dice, averaged over the chosen classes: 1 for a class absent from targets and
predictions, NaN when no labelled frame was seen. `FrameDice` reports the mean over labelled frames of each frame's
Dice with the test's empty-mask rules (both empty 1, one empty 0; `ivus_tf.metrics`): the test's number at the
training resolution, what phases select on by default (`TrainConfig.selection_metric`; pooled Dice lets a false
alarm on a calcium-free frame cost only its pixels, the test scores that frame 0). Both feed TensorBoard; the
paper's per-frame metrics at original resolution are `ivus_tf.metrics`. Compile with
`weighted_metrics=task_dice_metrics(tasks)` (Keras 3 passes sample weights only there). Definitions:
docs/metrics.md, docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from ivus_tf.core.vocab import CALCIFIED, CALCIUM, LUMEN, TASKS, VESSEL_WALL, WALL_LUMEN, check_tasks
from ivus_tf.losses import frame_weight_column, integer_labels


def _class_ids(class_ids: Sequence[int]) -> tuple[int, ...]:
    ids = tuple(int(c) for c in class_ids)
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise ValueError(f"class_ids must be distinct class indices >= 0, got {list(class_ids)}")
    return ids


def _frame_overlap(metric, y_true, y_pred, sample_weight):
    """Per-frame, per-class intersection and total (|truth| + |prediction|) of the argmax prediction, [B, K] each,
    for `metric.class_ids`; refuses a missing sample weight when the metric requires one."""
    if sample_weight is None and metric.require_sample_weight:
        raise ValueError(
            f"{metric.name}: no sample_weight. Keras 3 passes sample weights only to `weighted_metrics`: compile "
            "with weighted_metrics=..., not metrics=..., or the all-zero targets of frames without this "
            "task's label count as background (require_sample_weight=False if every frame is labelled)")
    y_pred = ops.convert_to_tensor(y_pred)
    labels = integer_labels(y_true, y_pred)
    predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    classes = ops.convert_to_tensor(metric.class_ids, dtype="int32")
    truth = ops.cast(ops.expand_dims(labels, -1) == classes, "float32")  # [B, ..., K]
    found = ops.cast(ops.expand_dims(predicted, -1) == classes, "float32")
    pixel_axes = tuple(range(1, len(truth.shape) - 1))
    return ops.sum(truth * found, axis=pixel_axes), ops.sum(truth + found, axis=pixel_axes)


@keras.saving.register_keras_serializable(package="ivus_tf")
class TaskDice(keras.metrics.Metric):
    """Pooled Dice of `class_ids` (mean over them) from argmax predictions, over the frames with weight > 0.

    `update_state(y_true, y_pred, sample_weight)`: integer labels [B, ...] (or [B, ..., 1]), probabilities
    [B, ..., C], frame weights [B] (fractional weights scale a frame's pixel counts).
    """

    def __init__(self, class_ids: Sequence[int] = (1,), name: str = "dice", require_sample_weight: bool = True,
                 dtype=None):
        super().__init__(name=name, dtype=dtype or "float32")
        self.class_ids = _class_ids(class_ids)
        self.require_sample_weight = bool(require_sample_weight)
        count = len(self.class_ids)
        self.intersection = self.add_variable(shape=(count,), initializer="zeros", dtype="float32",
                                              name="intersection")
        self.total = self.add_variable(shape=(count,), initializer="zeros", dtype="float32", name="total")
        self.labelled_frames = self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                                 name="labelled_frames")

    def update_state(self, y_true, y_pred, sample_weight=None):
        intersection, total = _frame_overlap(self, y_true, y_pred, sample_weight)
        if sample_weight is None:
            frames = ops.cast(ops.shape(intersection)[0], "float32")
        else:
            column = frame_weight_column(sample_weight)
            intersection, total = intersection * column, total * column
            frames = ops.sum(ops.cast(column > 0, "float32"))
        self.intersection.assign_add(ops.sum(intersection, axis=0))
        self.total.assign_add(ops.sum(total, axis=0))
        self.labelled_frames.assign_add(frames)

    def result(self):
        total = ops.convert_to_tensor(self.total)
        nonempty = total > 0
        dice = ops.where(nonempty, 2.0 * self.intersection / ops.where(nonempty, total, 1.0), 1.0)
        return ops.where(self.labelled_frames > 0, ops.mean(dice), float("nan"))

    def get_config(self):
        return {**super().get_config(), "class_ids": list(self.class_ids),
                "require_sample_weight": self.require_sample_weight}


@keras.saving.register_keras_serializable(package="ivus_tf")
class FrameDice(keras.metrics.Metric):
    """Mean per-frame Dice of `class_ids` (mean over them per frame) from argmax predictions, over the frames with
    weight > 0, each frame weighted by its weight; a class absent from a frame's target and prediction has Dice 1
    there, present in only one of them 0 (`ivus_tf.metrics.dice`). NaN when no labelled frame was seen.

    `update_state(y_true, y_pred, sample_weight)` as `TaskDice`. Sums are float32 (a frame's Dice is at most 1, so
    an epoch's sum stays exact to ~1e-7 relative).
    """

    def __init__(self, class_ids: Sequence[int] = (1,), name: str = "frame_dice",
                 require_sample_weight: bool = True, dtype=None):
        super().__init__(name=name, dtype=dtype or "float32")
        self.class_ids = _class_ids(class_ids)
        self.require_sample_weight = bool(require_sample_weight)
        self.dice_sum = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="dice_sum")
        self.weight_sum = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="weight_sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        intersection, total = _frame_overlap(self, y_true, y_pred, sample_weight)
        nonempty = total > 0
        dice = ops.where(nonempty, 2.0 * intersection / ops.where(nonempty, total, 1.0), 1.0)
        frame_dice = ops.mean(dice, axis=-1)  # [B]
        if sample_weight is None:
            weight = ops.ones_like(frame_dice)
        else:
            weight = ops.reshape(frame_weight_column(sample_weight), (-1,))
        self.dice_sum.assign_add(ops.sum(frame_dice * weight))
        self.weight_sum.assign_add(ops.sum(weight))

    def result(self):
        weight = ops.convert_to_tensor(self.weight_sum)
        return ops.where(weight > 0, self.dice_sum / ops.where(weight > 0, weight, 1.0), float("nan"))

    def get_config(self):
        return {**super().get_config(), "class_ids": list(self.class_ids),
                "require_sample_weight": self.require_sample_weight}


def task_dice_metrics(tasks: Sequence[str] = TASKS) -> dict:
    """`weighted_metrics` for `model.compile`: calcium Dice (class 1); wall-lumen mean Dice of lumen and vessel
    wall plus each separately; each pooled, and the calcium and wall-lumen mean also per frame. Keras logs them as
    `calcium_dice`, `calcium_frame_dice`, `wall_lumen_dice`, `wall_lumen_lumen_dice`, `wall_lumen_vessel_wall_dice`,
    `wall_lumen_frame_dice` (prefixed `val_` on validation data)."""
    metrics = {
        CALCIUM: lambda: [TaskDice((CALCIFIED,), name="dice"), FrameDice((CALCIFIED,), name="frame_dice")],
        WALL_LUMEN: lambda: [TaskDice((LUMEN, VESSEL_WALL), name="dice"), TaskDice((LUMEN,), name="lumen_dice"),
                             TaskDice((VESSEL_WALL,), name="vessel_wall_dice"),
                             FrameDice((LUMEN, VESSEL_WALL), name="frame_dice")],
    }
    return {task: metrics[task]() for task in check_tasks(tasks)}
