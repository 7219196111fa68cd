"""`TaskDice`: pooled Dice over an epoch, frames without the task's label ignored, against numpy and by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_losses import compiled_model, multitask_batch

from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.keras_metrics import TaskDice, task_dice_metrics

tf = import_tensorflow()


def one_hot_prediction(classes, num_classes):
    """Softmax-like probabilities [B, H, W, C] whose argmax is `classes` [B, H, W]."""
    return (0.1 + 0.8 * np.eye(num_classes)[np.asarray(classes)]).astype(np.float32) / (0.9 + 0.1 * (num_classes - 1))


def numpy_pooled_dice(targets, predictions, weights, class_ids):
    """Reference: 2 sum_b w_b |P_b & T_b| / sum_b w_b (|P_b| + |T_b|) per class, 1 if empty, mean; NaN unlabelled."""
    weights = np.asarray(weights, np.float64)
    if not (weights > 0).any():
        return float("nan")
    predicted = np.argmax(predictions, axis=-1)
    dice = []
    for c in class_ids:
        truth, found = targets == c, predicted == c
        intersection = (weights * (truth & found).sum(axis=(1, 2))).sum()
        total = (weights * (truth.sum(axis=(1, 2)) + found.sum(axis=(1, 2)))).sum()
        dice.append(2 * intersection / total if total > 0 else 1.0)
    return float(np.mean(dice))


# Batch 1: a labelled calcium frame (3 calcium pixels, 3 predicted, 2 of them right) and an unlabelled frame (weight
# 0, all-zero target) predicted calcium everywhere. Batch 2: one labelled frame, 1 calcium pixel, none predicted.
BATCH_1 = (np.array([[[0, 1, 1], [0, 1, 0], [0, 0, 0]], np.zeros((3, 3), int)]),
           one_hot_prediction([[[0, 1, 0], [0, 1, 1], [0, 0, 0]], np.ones((3, 3), int)], 2),
           np.float32([1, 0]))
BATCH_2 = (np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 1]]]), one_hot_prediction(np.zeros((1, 3, 3), int), 2),
           np.float32([1]))


def test_hand_computed_pooled_dice_ignores_unlabelled_frames():
    dice = TaskDice((1,))
    dice.update_state(*BATCH_1)
    assert float(dice.result()) == pytest.approx(2 / 3)  # 2 * 2 / (3 + 3); counting the garbage frame: 4/15
    dice.update_state(*BATCH_2)
    assert float(dice.result()) == pytest.approx(4 / 7)  # 2 * (2 + 0) / (6 + 1): pooled, not (2/3 + 0) / 2
    background = TaskDice((0,))
    background.update_state(*BATCH_1)
    assert float(background.result()) == pytest.approx(10 / 12)  # 2 * 5 / (6 + 6)


def test_matches_numpy_on_random_wall_lumen_batches_with_fractional_weights():
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 3, (4, 5, 5)), rng.dirichlet([1, 1, 1], (4, 5, 5)).astype(np.float32),
                rng.choice(np.float32([0, 0.5, 1]), 4)) for _ in range(3)]
    for class_ids in ((1,), (2,), (1, 2), (0, 1, 2)):
        dice = TaskDice(class_ids)
        for batch in batches:
            dice.update_state(*batch)
        targets, predictions, weights = (np.concatenate(parts) for parts in zip(*batches))
        assert float(dice.result()) == pytest.approx(numpy_pooled_dice(targets, predictions, weights, class_ids),
                                                     abs=1e-6)
        dice.update_state(targets[..., None], predictions, weights)  # [B, H, W, 1] targets too
        assert float(dice.result()) == pytest.approx(numpy_pooled_dice(targets, predictions, weights, class_ids),
                                                     abs=1e-6)


def test_empty_rules_and_reset():
    dice = TaskDice((1,))
    assert np.isnan(float(dice.result()))  # nothing measured
    dice.update_state(*BATCH_1[:2], np.float32([0, 0]))
    assert np.isnan(float(dice.result()))  # still no labelled frame
    nothing = np.zeros((2, 3, 3), int)
    dice.update_state(nothing, one_hot_prediction(nothing, 2), np.float32([1, 1]))
    assert float(dice.result()) == 1.0  # labelled frames, no calcium in targets nor predictions
    dice.update_state(*BATCH_2)
    assert float(dice.result()) == 0.0  # one missed calcium pixel
    dice.reset_state()
    assert np.isnan(float(dice.result()))
    dice.update_state(*BATCH_1)
    assert float(dice.result()) == pytest.approx(2 / 3)
    mean = TaskDice((1, 2))  # lumen present and found, vessel wall absent everywhere: (1 + 1) / 2
    lumen = np.array([[[1, 1, 0], [0, 0, 0], [0, 0, 0]]])
    mean.update_state(lumen, one_hot_prediction(lumen, 3), np.float32([1]))
    assert float(mean.result()) == 1.0


def test_refuses_to_run_without_sample_weights_unless_told():
    with pytest.raises(ValueError, match="weighted_metrics"):
        TaskDice((1,)).update_state(*BATCH_1[:2])
    dice = TaskDice((1,), require_sample_weight=False)
    dice.update_state(*BATCH_1[:2])
    assert float(dice.result()) == pytest.approx(4 / 15)  # the garbage frame counts: 2 * 2 / (3 + 3 + 9)
    with pytest.raises(ValueError, match="class_ids"):
        TaskDice((1, 1))


def test_config_round_trip():
    dice = TaskDice((1, 2), name="wall_dice")
    config = dice.get_config()
    assert config["class_ids"] == [1, 2] and config["name"] == "wall_dice" and config["require_sample_weight"]
    again = TaskDice.from_config(config)
    assert (again.class_ids, again.name) == ((1, 2), "wall_dice")
    restored = keras.metrics.deserialize(keras.metrics.serialize(TaskDice((2,), require_sample_weight=False)))
    assert isinstance(restored, TaskDice) and restored.class_ids == (2,) and not restored.require_sample_weight


def threshold_image(model):
    """Make the tiny model's predictions depend on the pixel value x: calcium where x > 0.5; wall_lumen background
    below 0.3, lumen up to 0.7, vessel wall above."""
    features = model.get_layer("features")
    features.set_weights([np.ones((1, 1, 1, 4), np.float32), np.zeros(4, np.float32)])  # every channel = x
    for task, slopes, offsets in (("calcium", [0, 10], [0, -5]), ("wall_lumen", [0, 10, 30], [0, -3, -17])):
        kernel = np.zeros((1, 1, 4, len(slopes)), np.float32)
        kernel[0, 0, 0] = slopes
        model.get_layer(task).set_weights([kernel, np.float32(offsets)])


def test_keras_evaluate_reports_the_pooled_dice_of_labelled_frames(tmp_path):
    targets, _, weights = multitask_batch()
    rng = np.random.default_rng(1)
    images = rng.random((8, 2, 2, 1)).astype(np.float32)
    targets = {task: np.concatenate([t, np.roll(t, 1, axis=0)]) for task, t in targets.items()}
    weights = {task: np.concatenate([w, np.roll(w, 1)]) for task, w in weights.items()}
    dataset = tf.data.Dataset.from_tensor_slices((images, targets, weights)).batch(3)  # 3 batches, last partial
    model = compiled_model(lam=0.5, weighted_metrics=task_dice_metrics())
    threshold_image(model)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    predictions = model.predict(images, verbose=0)
    expected = {
        "calcium_dice": numpy_pooled_dice(targets["calcium"], predictions["calcium"], weights["calcium"], (1,)),
        "wall_lumen_dice": numpy_pooled_dice(targets["wall_lumen"], predictions["wall_lumen"], weights["wall_lumen"],
                                             (1, 2)),
        "wall_lumen_lumen_dice": numpy_pooled_dice(targets["wall_lumen"], predictions["wall_lumen"],
                                                   weights["wall_lumen"], (1,)),
        "wall_lumen_vessel_wall_dice": numpy_pooled_dice(targets["wall_lumen"], predictions["wall_lumen"],
                                                         weights["wall_lumen"], (2,)),
    }
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-6), name
        assert 0 < value < 1, name  # a test that could fail
    unweighted = numpy_pooled_dice(targets["calcium"], predictions["calcium"], np.ones(8), (1,))
    assert unweighted != pytest.approx(expected["calcium_dice"], abs=1e-3)  # the weights matter on this batch

    path = tmp_path / "model.keras"
    model.optimizer.build(model.trainable_variables)  # saved and restored like a trained model's
    model.save(path)
    again = keras.models.load_model(path).evaluate(dataset, verbose=0, return_dict=True)
    for name, value in expected.items():
        assert again[name] == pytest.approx(value, abs=1e-6), name


def test_keras_metrics_argument_fails_loudly():
    targets, _, weights = multitask_batch()
    images = np.zeros((4, 2, 2, 1), np.float32)
    model = compiled_model(lam=1.0, metrics={"calcium": [TaskDice((1,))]})
    with pytest.raises(ValueError, match="weighted_metrics"):
        model.evaluate(tf.data.Dataset.from_tensors((images, targets, weights)), verbose=0)


def test_task_dice_metrics():
    metrics = task_dice_metrics(("calcium",))
    assert list(metrics) == ["calcium"] and metrics["calcium"][0].class_ids == (1,)
    names = {task: [(m.name, m.class_ids) for m in ms] for task, ms in task_dice_metrics().items()}
    assert names["wall_lumen"] == [("dice", (1, 2)), ("lumen_dice", (1,)), ("vessel_wall_dice", (2,))]
    with pytest.raises(ValueError, match="unknown task"):
        task_dice_metrics(("plaque",))
