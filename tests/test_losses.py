"""Generalized Dice loss and the multi-task loss on hand-computed batches; Keras compile/fit/evaluate/save."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import JAX_MISSING, jax_python, run_jax_check
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.losses import (
    GeneralizedDiceLoss,
    class_weights,
    cross_entropy_loss,
    generalized_dice_loss,
    multitask_loss,
    multitask_loss_weights,
    segmentation_loss,
)

tf = import_tensorflow()
ROOT = Path(__file__).resolve().parents[1]


def probabilities(*foreground):
    """[B, H, W, 2] two-class probabilities from foreground probabilities [B, H, W]."""
    p1 = np.asarray(foreground, np.float32)
    return np.stack([1 - p1, p1], axis=-1)


# Batch 1: one 2x2 frame, two classes. Ground truth areas A = [3, 1].
TARGET_1 = np.array([[[0, 1], [0, 0]]])
PRED_1 = probabilities([[0.2, 0.6], [0.1, 0.3]])
# I = [0.8 + 0.9 + 0.7, 0.6] = [2.4, 0.6];  P = [2.8, 1.2];  P + A = [5.8, 2.2]
# inverse_square, w = [1/9, 1]: 1 - 2 (2.4/9 + 0.6) / (5.8/9 + 2.2) = 1 - 15.6/25.6 = 10/25.6 = 25/64
# inverse,        w = [1/3, 1]: 1 - 2 (0.8 + 0.6) / (5.8/3 + 2.2)   = 1 - 8.4/12.4  = 4/12.4  = 10/31

# Batch 2: two 3x3 frames, three classes. Frame 0 has 3 pixels of each class, predicted uniformly (1/3 each);
# frame 1 is all background, predicted perfectly.
TARGET_2 = np.array([[[0, 0, 1], [0, 1, 1], [2, 2, 2]], np.zeros((3, 3), int)])
PRED_2 = np.stack([np.full((3, 3, 3), 1 / 3), np.broadcast_to([1.0, 0, 0], (3, 3, 3))]).astype(np.float32)
# I = [1 + 9, 1, 1] = [10, 1, 1];  P = A = [12, 3, 3]
# inverse_square, w ~ [1/16, 1, 1]: 1 - 2 (10/16 + 2) / (24/16 + 12) = 1 - 5.25/13.5 = 11/18
# inverse,        w ~ [1/4, 1, 1]:  1 - 2 (10/4 + 2) / (24/4 + 12)   = 1 - 9/18     = 1/2
# Frame weights [1, 0]: I = [1, 1, 1], P = A = [3, 3, 3], equal weights: 1 - 2 * 3 / 18 = 2/3 (both weightings).
# Frame weights [1, 0.5]: I = [5.5, 1, 1], P = A = [7.5, 3, 3]
# inverse_square, w ~ [0.16, 1, 1]: 1 - 2 (0.88 + 2) / (2.4 + 12) = 1 - 5.76/14.4 = 0.6
# inverse,        w ~ [0.4, 1, 1]:  1 - 2 (2.2 + 2) / (6 + 12)    = 1 - 8.4/18   = 8/15


def loss_and_gradient(target, pred, frame_weights=None, weighting="inverse_square"):
    pred = tf.Variable(pred)
    with tf.GradientTape() as tape:
        loss = generalized_dice_loss(target, pred, frame_weights, weighting)
    return float(loss), tape.gradient(loss, pred).numpy()


@pytest.mark.parametrize("target, pred, weights, weighting, expected", [
    (TARGET_1, PRED_1, None, "inverse_square", 25 / 64),
    (TARGET_1, PRED_1, None, "inverse", 10 / 31),
    (TARGET_2, PRED_2, None, "inverse_square", 11 / 18),
    (TARGET_2, PRED_2, None, "inverse", 1 / 2),
    (TARGET_2, PRED_2, [1.0, 0.0], "inverse_square", 2 / 3),
    (TARGET_2, PRED_2, [1.0, 0.0], "inverse", 2 / 3),
    (TARGET_2, PRED_2, [1.0, 0.5], "inverse_square", 0.6),
    (TARGET_2, PRED_2, [1.0, 0.5], "inverse", 8 / 15),
])
def test_hand_computed_batches(target, pred, weights, weighting, expected):
    assert float(generalized_dice_loss(target, pred, weights, weighting)) == pytest.approx(expected, abs=1e-6)


def test_targets_with_a_channel_axis_and_sums_over_frames_not_means():
    assert float(generalized_dice_loss(TARGET_2[..., None], PRED_2)) == pytest.approx(11 / 18, abs=1e-6)
    # Over the batch: not the mean of the per-frame losses (2/3 for frame 0, 0 for the perfect frame 1).
    assert float(generalized_dice_loss(TARGET_2, PRED_2)) != pytest.approx(1 / 3, abs=1e-3)


@pytest.mark.parametrize("weighting", ["inverse_square", "inverse"])
def test_perfect_prediction_gives_zero(weighting):
    target = np.array([[[0, 1, 2], [0, 0, 1], [2, 2, 0]], np.zeros((3, 3), int)])  # frame 1: background only
    pred = np.eye(3, dtype=np.float32)[target]
    assert float(generalized_dice_loss(target, pred, weighting=weighting)) == pytest.approx(0.0, abs=1e-7)
    calcium_free = np.zeros((2, 4, 4), int)  # calcium absent from the whole batch
    assert float(generalized_dice_loss(calcium_free, np.eye(2, dtype=np.float32)[calcium_free],
                                       weighting=weighting)) == pytest.approx(0.0, abs=1e-7)


def test_absent_class_gets_the_weight_of_the_rarest_present_class():
    # Areas [3, 1, 0]: inverse_square weights [1/9, 1, 1] (the absent class takes the largest finite weight).
    np.testing.assert_allclose(class_weights(np.array([3.0, 1.0, 0.0])), [1 / 9, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(class_weights(np.array([3.0, 1.0, 0.0]), "inverse"), [1 / 3, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(class_weights(np.zeros(3)), [0, 0, 0])
    # Batch 1's target with three classes, every pixel predicted [0.7, 0.2, 0.1]:
    # I = [2.1, 0.2, 0], P = [2.8, 0.8, 0.4], A = [3, 1, 0]
    # 1 - 2 (2.1/9 + 0.2 + 0) / (5.8/9 + 1.8 + 0.4) = 1 - 7.8/25.6 = 89/128
    pred = np.broadcast_to(np.float32([0.7, 0.2, 0.1]), (1, 2, 2, 3))
    loss, gradient = loss_and_gradient(TARGET_1, pred)
    assert loss == pytest.approx(89 / 128, abs=1e-6)
    assert np.isfinite(gradient).all() and np.abs(gradient).max() < 10


@pytest.mark.parametrize("weighting", ["inverse_square", "inverse"])
def test_absent_calcium_reduces_to_the_mean_false_positive_probability(weighting):
    # No calcium in the batch: w_1 = w_0, and GDL = 1 - 2 sum p0 / (sum p0 + N + sum p1) = mean p1.
    rng = np.random.default_rng(0)
    foreground = rng.uniform(0, 0.1, (3, 8, 8)).astype(np.float32)
    loss, gradient = loss_and_gradient(np.zeros((3, 8, 8), int), probabilities(*foreground), weighting=weighting)
    assert loss == pytest.approx(float(foreground.mean()), rel=1e-5)
    assert np.isfinite(gradient).all()
    assert gradient[..., 1].min() > 0  # more calcium probability raises the loss


@pytest.mark.parametrize("weighting, expected_loss, expected_threshold", [
    ("inverse", 5 / 14, 5 / 14),
    ("inverse_square", 0.82, 0.1),
])
def test_all_background_prediction_and_the_probability_at_which_marking_calcium_pays(
        weighting, expected_loss, expected_threshold):
    # One 10x10 frame, 10 calcium pixels (A = [90, 10]), predicted all background (p1 = 0 everywhere):
    # I = [90, 0], P = [100, 0], P + A = [190, 10].
    # inverse,        w = [1/9, 1]:  1 - 2 (10) / (190/9 + 10)      = 1 - 180/280   = 5/14 (~1/3 for rare calcium)
    # inverse_square, w = [1/81, 1]: 1 - 2 (90/81) / (190/81 + 10)  = 1 - 180/1000  = 0.82
    # Moving probability from background to calcium at one pixel changes numerator and denominator by
    # (2 w1, w1 - w0) on a calcium pixel and (-2 w0, w1 - w0) on a background pixel; the loss falls in
    # expectation where the pixel's chance q of being calcium exceeds q* = dL_bg / (dL_bg - dL_ca):
    # inverse: dL_ca : dL_bg = -400/9 : 2000/81 -> q* = 5/14; inverse_square: -16400/729 : 16400/6561 -> q* = 1/10.
    # Under 1/A a head that is not yet sure of any pixel (q < 1/3) is pushed to "no calcium" (docs/metrics.md).
    target = np.zeros((1, 10, 10), int)
    target[0, 4, :] = 1
    loss, gradient = loss_and_gradient(target, probabilities(np.zeros((10, 10))), weighting=weighting)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    towards_calcium = gradient[0, ..., 1] - gradient[0, ..., 0]  # d loss / d (p1 - p0) at each pixel
    on_calcium, on_background = towards_calcium[4, 0], towards_calcium[0, 0]
    assert on_calcium < 0 < on_background
    assert on_background / (on_background - on_calcium) == pytest.approx(expected_threshold, rel=1e-5)


def test_frames_with_weight_zero_do_not_count():
    rng = np.random.default_rng(1)
    garbage_target = rng.integers(0, 3, (1, 3, 3))
    garbage_pred = rng.dirichlet([1, 1, 1], (1, 3, 3)).astype(np.float32)
    target = np.concatenate([TARGET_2, garbage_target])
    pred = np.concatenate([PRED_2, garbage_pred])
    for weighting in ("inverse_square", "inverse"):
        alone = float(generalized_dice_loss(TARGET_2, PRED_2, weighting=weighting))
        assert float(generalized_dice_loss(target, pred, [1, 1, 0], weighting)) == pytest.approx(alone, abs=1e-6)
    _, gradient = loss_and_gradient(target, pred, np.float32([1, 1, 0]))
    assert not gradient[2].any()  # and the unlabelled frame gets no gradient


def test_no_labelled_frame_gives_zero_loss_and_zero_gradient():
    for weighting in ("inverse_square", "inverse"):
        loss, gradient = loss_and_gradient(TARGET_2, PRED_2, np.zeros(2, np.float32), weighting)
        assert loss == 0.0
        assert np.isfinite(gradient).all() and not gradient.any()
    loss, gradient = loss_and_gradient(np.zeros((0, 3, 3), int), np.zeros((0, 3, 3, 2), np.float32))  # empty batch
    assert loss == 0.0 and gradient.shape == (0, 3, 3, 2)


def test_float16_predictions_are_summed_in_float32():
    # 12 frames of 256 x 256: the per-class sums reach ~786,432, far above float16's largest value 65,504.
    rng = np.random.default_rng(2)
    target = rng.integers(0, 3, (12, 256, 256))
    pred16 = rng.dirichlet([4, 1, 1], (12, 256, 256)).astype(np.float16)
    with np.errstate(over="ignore"):
        assert np.isinf(pred16[..., 0].sum(dtype=np.float16))  # what a float16 sum would do
    loss16 = float(generalized_dice_loss(target, pred16))
    loss32 = float(generalized_dice_loss(target, pred16.astype(np.float32)))
    assert np.isfinite(loss16) and loss16 == pytest.approx(loss32, rel=1e-5)
    assert float(generalized_dice_loss(target, tf.constant(pred16, tf.bfloat16))) == pytest.approx(loss32, rel=1e-2)


def test_bad_inputs_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown weighting 'log'"):
        generalized_dice_loss(TARGET_1, PRED_1, weighting="log")
    with pytest.raises(ValueError, match="one-hot"):
        generalized_dice_loss(np.eye(2)[TARGET_1], PRED_1)
    with pytest.raises(ValueError, match="unknown weighting"):
        GeneralizedDiceLoss(weighting="inverse_cube")
    with pytest.raises(ValueError, match="unknown task"):
        multitask_loss_weights(1.0, ("calcium", "plaque"))
    with pytest.raises(ValueError, match="lambda"):
        multitask_loss_weights(-1.0)


def multitask_batch():
    """Two calcium frames (2x2) followed by two wall-lumen-only frames; weights say which frame has which label."""
    targets = {"calcium": np.concatenate([TARGET_1, [[[1, 1], [0, 0]]], np.zeros((2, 2, 2), int)]),
               "wall_lumen": np.array([[[0, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 2], [0, 2]], [[1, 1], [2, 0]]])}
    rng = np.random.default_rng(3)
    predictions = {"calcium": rng.dirichlet([1, 1], (4, 2, 2)).astype(np.float32),
                   "wall_lumen": rng.dirichlet([1, 1, 1], (4, 2, 2)).astype(np.float32)}
    weights = {"calcium": np.float32([1, 1, 0, 0]), "wall_lumen": np.float32([0, 0, 1, 1])}
    return targets, predictions, weights


def test_multitask_loss_is_lambda_times_calcium_plus_wall_lumen():
    targets, predictions, weights = multitask_batch()
    calcium = float(generalized_dice_loss(targets["calcium"][:2], predictions["calcium"][:2]))
    wall_lumen = float(generalized_dice_loss(targets["wall_lumen"][2:], predictions["wall_lumen"][2:]))
    assert multitask_loss_weights(0.3) == {"calcium": 0.3, "wall_lumen": 1.0}
    assert multitask_loss_weights(0.3, ("calcium",)) == {"calcium": 0.3}
    for lam in (0.0, 0.3, 1.0, 2.5):
        assert float(multitask_loss(targets, predictions, weights, lam)) == pytest.approx(
            lam * calcium + wall_lumen, abs=1e-6)
    assert float(multitask_loss({"calcium": TARGET_1}, {"calcium": PRED_1})) == pytest.approx(25 / 64, abs=1e-6)


def test_multitask_batch_without_calcium_frames_is_the_wall_lumen_loss():
    targets, predictions, weights = multitask_batch()
    weights["calcium"] = np.zeros(4, np.float32)
    wall_lumen = float(generalized_dice_loss(targets["wall_lumen"][2:], predictions["wall_lumen"][2:]))
    calcium_pred = tf.Variable(predictions["calcium"])
    with tf.GradientTape() as tape:
        loss = multitask_loss(targets, {**predictions, "calcium": calcium_pred}, weights, lam=0.5)
    assert float(loss) == pytest.approx(wall_lumen, abs=1e-6)
    gradient = tape.gradient(loss, calcium_pred).numpy()
    assert np.isfinite(gradient).all() and not gradient.any()


def test_keras_loss_uses_sample_weights_as_frame_weights():
    loss = GeneralizedDiceLoss(weighting="inverse")
    assert float(loss(TARGET_2, PRED_2, np.float32([1, 0.5]))) == pytest.approx(8 / 15, abs=1e-6)
    assert float(loss(TARGET_2, PRED_2, np.float32([[1], [0.5]]))) == pytest.approx(8 / 15, abs=1e-6)
    assert float(loss(TARGET_2, PRED_2)) == pytest.approx(1 / 2, abs=1e-6)
    assert float(loss(TARGET_2, PRED_2, np.zeros(2, np.float32))) == 0.0


def test_keras_loss_config_round_trip():
    loss = GeneralizedDiceLoss(weighting="inverse", name="calcium_gdl")
    assert loss.get_config() == {"weighting": "inverse", "name": "calcium_gdl", "loss": "gdl"}
    again = GeneralizedDiceLoss.from_config(loss.get_config())
    assert (again.weighting, again.name) == ("inverse", "calcium_gdl")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, GeneralizedDiceLoss) and restored.weighting == "inverse"
    assert float(restored(TARGET_1, PRED_1)) == pytest.approx(10 / 31, abs=1e-6)


def test_cross_entropy_on_a_hand_computed_batch():
    # Frame 0: pixels of class 0 (p 0.9) and class 1 (p 0.8): mean(-ln 0.9, -ln 0.8) = 0.164252.
    # Frame 1: both class 0 at p 0.5: ln 2 = 0.693147. A frame of weight 0 (or absent labels) does not count.
    target = np.array([[[0, 1]], [[0, 0]]])
    pred = np.float32([[[[0.9, 0.1], [0.2, 0.8]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    frame_0 = (-np.log(0.9) - np.log(0.8)) / 2
    assert float(cross_entropy_loss(target, pred)) == pytest.approx((frame_0 + np.log(2)) / 2, abs=1e-6)
    assert float(cross_entropy_loss(target, pred, [1, 0])) == pytest.approx(frame_0, abs=1e-6)
    assert float(cross_entropy_loss(target, pred, [1, 3])) == pytest.approx((frame_0 + 3 * np.log(2)) / 4, abs=1e-6)
    assert float(cross_entropy_loss(target, pred, [0, 0])) == 0.0
    # a wrong prediction of probability 0 costs -ln(smallest normal float32) = 87.3, not infinity
    assert float(cross_entropy_loss(np.array([[[1]]]), np.float32([[[[1.0, 0.0]]]]))) == pytest.approx(
        -np.log(np.finfo(np.float32).tiny), rel=1e-4)


def test_gdl_ce_is_the_sum_and_keeps_a_gradient_where_the_dice_term_has_none():
    for weighting in ("inverse_square", "inverse"):
        both = float(segmentation_loss(TARGET_2, PRED_2, [1, 0.5], weighting, loss="gdl_ce"))
        parts = (float(generalized_dice_loss(TARGET_2, PRED_2, [1, 0.5], weighting))
                 + float(cross_entropy_loss(TARGET_2, PRED_2, [1, 0.5])))
        assert both == pytest.approx(parts, abs=1e-6)
    keras_loss = GeneralizedDiceLoss("inverse", loss="gdl_ce")
    assert float(keras_loss(TARGET_2, PRED_2, np.float32([1, 0.5]))) == pytest.approx(
        float(segmentation_loss(TARGET_2, PRED_2, [1, 0.5], "inverse", "gdl_ce")), abs=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(keras_loss))
    assert restored.loss == "gdl_ce"
    with pytest.raises(ValueError, match="unknown loss 'dice_ce'; valid: gdl, gdl_ce"):
        GeneralizedDiceLoss("inverse", loss="dice_ce")
    # A collapsed calcium head: logits saying "background" with certainty on a calcium pixel. Through the softmax
    # the Dice term's gradient on the logits vanishes; the cross-entropy's is (p - y), about -1 on that pixel.
    import tensorflow as tf

    logits = tf.Variable(np.float32([[[[20.0, -20.0], [20.0, -20.0]]]]))
    target = np.array([[[0, 1]]])
    gradients = {}
    for loss in ("gdl", "gdl_ce"):
        with tf.GradientTape() as tape:
            value = segmentation_loss(target, tf.nn.softmax(logits), None, "inverse", loss)
        gradients[loss] = np.abs(tape.gradient(value, logits).numpy()).max()
    assert gradients["gdl"] < 1e-6 and gradients["gdl_ce"] > 0.1


def two_task_model():
    """A tiny dict-output model (calcium: 2 classes, wall_lumen: 3 classes) on 2x2 images."""
    image = keras.Input((2, 2, 1), name="image")
    features = keras.layers.Conv2D(4, 1, activation="relu", name="features")(image)
    outputs = {"calcium": keras.layers.Conv2D(2, 1, activation="softmax", name="calcium")(features),
               "wall_lumen": keras.layers.Conv2D(3, 1, activation="softmax", name="wall_lumen")(features)}
    return keras.Model(image, outputs)


def compiled_model(lam, weighting="inverse_square", **compile_options):
    keras.utils.set_random_seed(0)
    model = two_task_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss={task: GeneralizedDiceLoss(weighting) for task in ("calcium", "wall_lumen")},
                  loss_weights=multitask_loss_weights(lam), **compile_options)
    return model


def test_keras_fit_and_evaluate_match_the_functional_loss(tmp_path):
    targets, _, weights = multitask_batch()
    images = np.random.default_rng(4).random((4, 2, 2, 1)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors((images, targets, weights))
    lam = 0.4
    model = compiled_model(lam, "inverse")
    history = model.fit(dataset.repeat(3), epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    predictions = model.predict(images, verbose=0)
    calcium = float(generalized_dice_loss(targets["calcium"], predictions["calcium"], weights["calcium"], "inverse"))
    wall_lumen = float(generalized_dice_loss(targets["wall_lumen"], predictions["wall_lumen"], weights["wall_lumen"],
                                             "inverse"))
    assert result["calcium_loss"] == pytest.approx(calcium, abs=1e-5)
    assert result["wall_lumen_loss"] == pytest.approx(wall_lumen, abs=1e-5)
    assert result["loss"] == pytest.approx(lam * calcium + wall_lumen, abs=1e-5)
    assert result["loss"] == pytest.approx(float(multitask_loss(targets, predictions, weights, lam, "inverse")),
                                           abs=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert all(isinstance(restored.loss[t], GeneralizedDiceLoss) and restored.loss[t].weighting == "inverse"
               for t in ("calcium", "wall_lumen"))
    again = restored.evaluate(dataset, verbose=0, return_dict=True)
    assert again["loss"] == pytest.approx(result["loss"], abs=1e-5)


def test_keras_fit_on_a_batch_without_calcium_frames_stays_finite():
    targets, _, weights = multitask_batch()
    weights["calcium"] = np.zeros(4, np.float32)
    images = np.random.default_rng(5).random((4, 2, 2, 1)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors((images, targets, weights))
    model = compiled_model(lam=1.0)
    calcium_kernel = model.get_layer("calcium").kernel.numpy()
    model.fit(dataset.repeat(2), epochs=1, shuffle=False, verbose=0)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    assert result["calcium_loss"] == 0.0 and np.isfinite(result["loss"])
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    np.testing.assert_array_equal(model.get_layer("calcium").kernel.numpy(), calcium_kernel)  # no calcium gradient


def test_keras_fit_and_evaluate_on_the_data_pipeline(make_records):
    """The pipeline's (image, {task: target}, {task: frame weights}) batches go straight into fit and evaluate."""
    from ivus_tf.data.pipeline import PipelineConfig, make_eval_dataset, make_train_dataset

    both, calcium, wall_lumen = ("calcium", "wall_lumen"), ("calcium",), ("wall_lumen",)
    records = make_records({"p1": [("1", both), ("2", calcium), ("3", wall_lumen)], "p2": [("1", wall_lumen)]},
                           size=(32, 32))
    config = PipelineConfig(image_size=8, batch_size=4, shuffle_buffer=0)
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    model = keras.Model(image, {t: keras.layers.Conv2D(n, 1, activation="softmax", name=t)(features)
                                for t, n in (("calcium", 2), ("wall_lumen", 3))})
    model.compile(optimizer="adam", loss={t: GeneralizedDiceLoss() for t in both},
                  loss_weights=multitask_loss_weights(0.5))
    history = model.fit(make_train_dataset(records, ["p1", "p2"], config), steps_per_epoch=2, epochs=1,
                        shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    evaluation = make_eval_dataset(records, ["p1", "p2"], config)
    images, targets, weights = next(iter(evaluation))  # all 4 frames in one batch
    labelled = sorted(zip(weights["calcium"].numpy(), weights["wall_lumen"].numpy()))
    assert labelled == [(0, 1), (0, 1), (1, 0), (1, 1)]  # frames without calcium or without wall-lumen labels
    result = model.evaluate(evaluation, verbose=0, return_dict=True)
    expected = multitask_loss(targets, model.predict(images, verbose=0), weights, lam=0.5)
    assert result["loss"] == pytest.approx(float(expected), abs=1e-5)


MIRRORED_CHECK = """
import numpy as np
from ivus_tf.core.tf_import import import_tensorflow
tf = import_tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from test_losses import multitask_batch, two_task_model
from ivus_tf.losses import GeneralizedDiceLoss, multitask_loss, multitask_loss_weights
targets, _, weights = multitask_batch()
weights = {"calcium": np.float32([1, 0, 1, 0]), "wall_lumen": np.float32([0, 1, 0, 1])}
images = np.random.default_rng(4).random((4, 2, 2, 1)).astype(np.float32)
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    keras.utils.set_random_seed(0)
    model = two_task_model()
    model.compile("adam", loss={t: GeneralizedDiceLoss() for t in ("calcium", "wall_lumen")},
                  loss_weights=multitask_loss_weights(0.4))
loss = model.evaluate(tf.data.Dataset.from_tensors((images, targets, weights)), verbose=0, return_dict=True)["loss"]
predictions = model.predict(images, verbose=0)
half = lambda batch, part: {task: value[part] for task, value in batch.items()}
replicas = [float(multitask_loss(half(targets, s), half(predictions, s), half(weights, s), 0.4))
            for s in (slice(0, 2), slice(2, 4))]
whole = float(multitask_loss(targets, predictions, weights, 0.4))
assert abs(loss - whole) < 1e-5, (loss, whole, replicas)
assert abs(whole - np.mean(replicas)) > 1e-3, (whole, replicas)  # the check can tell the two apart
print("mirrored ok")
"""


@pytest.mark.slow
def test_mirrored_strategy_reports_the_loss_of_the_global_batch():
    """Two CPU replicas, each holding half the batch: the class sums are summed over the replicas, so Keras reports
    (and descends) the GDL of the whole batch, not the mean of per-half GDLs, nor (without the per-replica
    scaling) twice it. tests/test_distribute.py checks the gradients."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(MIRRORED_CHECK)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored ok" in result.stdout


JAX_CHECK = """
import numpy as np, keras, jax
from ivus_tf.keras_metrics import TaskDice
from ivus_tf.losses import generalized_dice_loss, multitask_loss
assert keras.backend.backend() == "jax"
target = np.array([[[0, 1], [0, 0]]]); p1 = np.float32([[[0.2, 0.6], [0.1, 0.3]]])
pred = np.stack([1 - p1, p1], -1)
assert abs(float(generalized_dice_loss(target, pred)) - 25 / 64) < 1e-6
assert abs(float(generalized_dice_loss(target, pred, weighting="inverse")) - 10 / 31) < 1e-6
for weights in (np.float32([1]), np.float32([0])):
    absent = np.zeros((1, 2, 2), int)
    grad = jax.grad(lambda p: generalized_dice_loss(absent, p, weights))(pred)
    assert np.isfinite(np.asarray(grad)).all(), grad
assert float(multitask_loss({"calcium": target}, {"calcium": pred}, {"calcium": np.float32([0])}, 2.0)) == 0.0
q = np.float32([[[0.2, 0.6], [0.7, 0.3]]])
dice = TaskDice((1,))
dice.update_state(target, np.stack([1 - q, q], -1), np.float32([1]))
assert abs(float(dice.result()) - 2 / 3) < 1e-6  # I = 1, T = 1 + 2

from ivus_tf.losses import GeneralizedDiceLoss, multitask_loss_weights  # compile + fit: Keras calls the loss
image = keras.Input((2, 2, 1))
features = keras.layers.Conv2D(4, 1, activation="relu")(image)
model = keras.Model(image, {"calcium": keras.layers.Conv2D(2, 1, activation="softmax", name="calcium")(features),
                            "wall_lumen": keras.layers.Conv2D(3, 1, activation="softmax", name="wall_lumen")(features)})
model.compile("adam", loss={t: GeneralizedDiceLoss() for t in ("calcium", "wall_lumen")},
              loss_weights=multitask_loss_weights(0.4))
rng = np.random.default_rng(0)
x = rng.random((4, 2, 2, 1)).astype("float32")
y = {"calcium": rng.integers(0, 2, (4, 2, 2)), "wall_lumen": rng.integers(0, 3, (4, 2, 2))}
w = {"calcium": np.float32([1, 1, 0, 0]), "wall_lumen": np.float32([0, 0, 1, 1])}
model.fit(x, y, sample_weight=w, batch_size=4, epochs=2, verbose=0)
loss = model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0, return_dict=True)["loss"]
assert abs(loss - float(multitask_loss(y, model.predict(x, verbose=0), w, 0.4))) < 1e-5
print("jax backend ok")
"""


@pytest.mark.slow
@pytest.mark.skipif(jax_python() is None, reason=JAX_MISSING)
def test_loss_and_metric_run_on_the_jax_backend():
    run_jax_check(JAX_CHECK, timeout_s=120)
