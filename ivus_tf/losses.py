"""Generalized Dice loss (Sudre et al. 2017) over the batch, per task, and the multi-task loss of Bargsten et al. 2021.

GDL = 1 - 2 sum_c w_c I_c / sum_c w_c (P_c + A_c), the class sums taken over every pixel of every labelled frame
of the batch (frame weights from the pipeline), w_c from the inverse ground-truth area
(`inverse`: 1/A_c, the paper's "weights proportional to the inverse ground truth segmentation areas" and training's
default; `inverse_square`: 1/A_c^2, Sudre et al.'s, the default of these functions). An absent class gets the
largest finite weight (NiftyNet's rule), a batch without a labelled frame gives 0 with a zero gradient, sums are
float32, and under `tf.distribute` the class sums are summed over the replicas so the loss is that of the global
batch. `gdl_ce` adds the mean pixel cross-entropy over the labelled frames (nnU-Net's Dice + CE): it keeps a
gradient where a saturated softmax has collapsed to all-background, which the Dice term alone does not. The
multi-task loss is `lambda * L_calcium + L_wall_lumen`. Definitions and reasons: docs/metrics.md.
Everything uses `keras.ops` (TensorFlow and JAX backends).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import ops

from ivus_tf.compat import scale_loss_for_distribution
from ivus_tf.core.vocab import CALCIUM, LOSSES, TASKS, WALL_LUMEN, check_tasks

WEIGHTINGS = {"inverse_square": 2.0, "inverse": 1.0}
# float32's smallest normal number: log(0) is avoided, and a confidently wrong pixel keeps its gradient (about -1
# on the logit through the softmax) down to probabilities of 1e-38. Keras' 1e-7 clip would cut it off exactly
# where a collapsed head needs it.
_PROBABILITY_FLOOR = 1.1754944e-38


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    return loss


def _check_weighting(weighting: str) -> float:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[weighting]


def integer_labels(y_true, y_pred):
    """int32 labels [B, ...] from integer targets [B, ...] or [B, ..., 1] matching probabilities [B, ..., C]."""
    labels = ops.convert_to_tensor(y_true)
    if len(labels.shape) == len(y_pred.shape):
        if labels.shape[-1] != 1:
            raise ValueError(f"targets must be integer class labels [B, ...] or [B, ..., 1] for predictions of "
                             f"shape {tuple(y_pred.shape)}; got shape {tuple(labels.shape)} (one-hot targets?)")
        labels = ops.squeeze(labels, axis=-1)
    elif len(labels.shape) != len(y_pred.shape) - 1:
        raise ValueError(f"targets of shape {tuple(labels.shape)} do not match predictions of shape "
                         f"{tuple(y_pred.shape)} ([B, ...] labels for [B, ..., C] probabilities)")
    return ops.cast(labels, "int32")


def frame_weight_column(frame_weights):
    """float32 [B, 1] from frame weights [B] or [B, 1] (Keras passes them as given by the dataset)."""
    return ops.reshape(ops.cast(frame_weights, "float32"), (-1, 1))


def class_sums(y_true, y_pred, frame_weights=None):
    """(I, P, A): float32 [C] intersection, predicted and ground-truth sums over all pixels of the batch, each
    frame's contribution multiplied by its weight (docs/metrics.md)."""
    probabilities = ops.cast(y_pred, "float32")
    num_classes = probabilities.shape[-1]
    if num_classes is None:
        raise ValueError("predictions need a static number of classes (last axis)")
    truth = ops.one_hot(integer_labels(y_true, probabilities), num_classes, dtype="float32")
    pixel_axes = tuple(range(1, len(probabilities.shape) - 1))
    per_frame = [ops.sum(probabilities * truth, axis=pixel_axes), ops.sum(probabilities, axis=pixel_axes),
                 ops.sum(truth, axis=pixel_axes)]  # each [B, C]
    if frame_weights is not None:
        column = frame_weight_column(frame_weights)
        per_frame = [sums * column for sums in per_frame]
    return _sum_over_replicas(tuple(ops.sum(sums, axis=0) for sums in per_frame))


def _sum_over_replicas(sums):
    """`sums` summed over the replicas of a `tf.distribute` strategy when called inside one of its replicas (more
    than one in sync); unchanged otherwise (any other backend, one replica, or outside a strategy)."""
    if keras.backend.backend() != "tensorflow":
        return sums
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return sums
    return tuple(context.all_reduce(tf.distribute.ReduceOp.SUM, list(sums)))


def class_weights(area, weighting: str = "inverse_square"):
    """Generalized Dice class weights [C] from ground-truth areas [C], normalised so the rarest present class has
    weight 1; an absent class gets that largest finite weight; all 0 when no class is present."""
    power = _check_weighting(weighting)
    area = ops.stop_gradient(ops.cast(area, "float32"))
    present = area > 0
    smallest = ops.min(ops.where(present, area, ops.max(area)))
    ratio = ops.where(present, smallest / ops.where(present, area, 1.0), 1.0)
    weights = ratio if power == 1.0 else ops.power(ratio, power)
    return ops.where(ops.any(present), weights, ops.zeros_like(weights))


def _safe_divide(numerator, denominator):
    """numerator / denominator, and 0 (with a zero gradient) where denominator is 0."""
    nonzero = denominator != 0
    return ops.where(nonzero, numerator / ops.where(nonzero, denominator, 1.0), 0.0)


def generalized_dice_loss(y_true, y_pred, frame_weights=None, weighting: str = "inverse_square"):
    """Generalized Dice loss over the batch (scalar float32).

    `y_true`: integer labels [B, ...] (or [B, ..., 1]); `y_pred`: softmax probabilities [B, ..., C] (any float
    dtype; summed in float32); `frame_weights`: [B] (None: every frame counts 1). See docs/metrics.md for the
    formula, the absent-class rule and the no-labelled-frame rule (loss 0).
    """
    intersection, predicted, area = class_sums(y_true, y_pred, frame_weights)
    weights = class_weights(area, weighting)
    numerator = 2.0 * ops.sum(weights * intersection)
    denominator = ops.sum(weights * (predicted + area))
    # (denominator - numerator) / denominator = 1 - numerator / denominator, and 0 when nothing is labelled.
    return _safe_divide(denominator - numerator, denominator)


def cross_entropy_loss(y_true, y_pred, frame_weights=None):
    """Mean pixel cross-entropy -log p[true class] over the labelled frames of the batch (scalar float32).

    Each frame's mean over its pixels is weighted by its frame weight and the sum divided by the sum of the weights
    (over the replicas under `tf.distribute`); 0 with a zero gradient when no frame is labelled. Probabilities are
    floored at float32's smallest normal number (a pixel costs at most 87.3).
    """
    probabilities = ops.cast(y_pred, "float32")
    num_classes = probabilities.shape[-1]
    truth = ops.one_hot(integer_labels(y_true, probabilities), num_classes, dtype="float32")
    true_probability = ops.sum(probabilities * truth, axis=-1)
    pixel_axes = tuple(range(1, len(true_probability.shape)))
    per_frame = ops.mean(-ops.log(ops.clip(true_probability, _PROBABILITY_FLOOR, 1.0)), axis=pixel_axes)
    weights = (ops.ones_like(per_frame) if frame_weights is None
               else ops.reshape(ops.cast(frame_weights, "float32"), (-1,)))
    total, count = _sum_over_replicas((ops.sum(per_frame * weights), ops.sum(weights)))
    return _safe_divide(total, count)


def segmentation_loss(y_true, y_pred, frame_weights=None, weighting: str = "inverse_square", loss: str = "gdl"):
    """`gdl`: the generalized Dice loss; `gdl_ce`: the generalized Dice loss plus the mean cross-entropy."""
    _check_loss(loss)
    value = generalized_dice_loss(y_true, y_pred, frame_weights, weighting)
    if loss == "gdl_ce":
        value = value + cross_entropy_loss(y_true, y_pred, frame_weights)
    return value


def multitask_loss_weights(lam: float, tasks: Sequence[str] = TASKS) -> dict:
    """Keras `loss_weights` for `L = lam * L_calcium + L_wall_lumen`: {"calcium": lam, "wall_lumen": 1.0},
    restricted to `tasks` (Keras needs the same keys as the loss dict)."""
    tasks = check_tasks(tasks)
    if not lam >= 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    weights = {CALCIUM: float(lam), WALL_LUMEN: 1.0}
    return {task: weights[task] for task in tasks}


def multitask_loss(targets: Mapping, predictions: Mapping, frame_weights: Mapping | None = None, lam: float = 1.0,
                   weighting: str = "inverse_square"):
    """`lam * GDL_calcium + GDL_wall_lumen` over the tasks present in `predictions` (dicts keyed by task).

    `frame_weights[task]` [B] says which frames carry that task's label (None or a missing key: all frames). A task
    without a labelled frame in the batch contributes 0. `lam` weights calcium only (default 1: a one-task
    calcium model gets the plain GDL).
    """
    loss_weights = multitask_loss_weights(lam, tuple(predictions))
    total = ops.zeros((), "float32")
    for task, weight in loss_weights.items():
        weights = None if frame_weights is None else frame_weights.get(task)
        total = total + weight * generalized_dice_loss(targets[task], predictions[task], weights, weighting)
    return total


@keras.saving.register_keras_serializable(package="ivus_tf")
class GeneralizedDiceLoss(keras.losses.Loss):
    """Keras loss: the generalized Dice loss over the batch (`generalized_dice_loss`), plus the mean cross-entropy
    with `loss="gdl_ce"` (`segmentation_loss`).

    Keras applies a loss's `sample_weight` per sample AFTER `call`; a loss over the batch is one number, so
    `__call__` is overridden to use `sample_weight` ([B] frame weights, e.g. the pipeline's per-task weights) inside
    the sums instead: frames of weight 0 do not count at all, and a batch without a labelled frame gives 0. Under
    `tf.distribute` the value is divided by the number of replicas like Keras's own losses (each replica's loss is
    the GDL over its share of the batch).
    """

    def __init__(self, weighting: str = "inverse_square", name: str = "generalized_dice", loss: str = "gdl"):
        _check_weighting(weighting)
        _check_loss(loss)
        super().__init__(name=name, reduction="sum", dtype="float32")
        self.weighting = weighting
        self.loss = loss

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            loss = segmentation_loss(y_true, y_pred, sample_weight, self.weighting, self.loss)
            return scale_loss_for_distribution(loss)

    def call(self, y_true, y_pred):
        """The unweighted loss (every frame counts); Keras uses `__call__`."""
        return segmentation_loss(y_true, y_pred, None, self.weighting, self.loss)

    def get_config(self):
        return {"weighting": self.weighting, "name": self.name, "loss": self.loss}
