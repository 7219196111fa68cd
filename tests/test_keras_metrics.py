"""`TaskDice` (pooled Dice over an epoch) and `FrameDice` (mean per-frame Dice, the test's rules), frames without
the task's label ignored, against numpy and by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_losses import compiled_model, multitask_batch

from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.keras_metrics import FrameDice, TaskDice, task_dice_metrics

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


def test_keras_evaluate_reports_the_pooled_and_per_frame_dice_of_labelled_frames(tmp_path):
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
        "calcium_frame_dice": numpy_frame_dice(targets["calcium"], predictions["calcium"], weights["calcium"], (1,)),
        "wall_lumen_frame_dice": numpy_frame_dice(targets["wall_lumen"], predictions["wall_lumen"],
                                                  weights["wall_lumen"], (1, 2)),
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
    assert names["wall_lumen"] == [("dice", (1, 2)), ("lumen_dice", (1,)), ("vessel_wall_dice", (2,)),
                                   ("frame_dice", (1, 2))]
    assert names["calcium"] == [("dice", (1,)), ("frame_dice", (1,))]
    assert isinstance(task_dice_metrics()["calcium"][1], FrameDice)
    with pytest.raises(ValueError, match="unknown task"):
        task_dice_metrics(("plaque",))


# ------------------------------------------------------------------------------------------------- FrameDice

def numpy_frame_dice(targets, predictions, weights, class_ids):
    """Reference: the weighted mean over frames of the mean over `class_ids` of `ivus_tf.metrics.dice`."""
    from ivus_tf.metrics import dice

    predicted = np.argmax(predictions, axis=-1)
    weights = np.asarray(weights, np.float64)
    if not (weights > 0).any():
        return float("nan")
    per_frame = [np.mean([dice(p == c, t == c) for c in class_ids]) for p, t in zip(predicted, targets)]
    return float(np.sum(weights * per_frame) / weights.sum())


def pooled_and_per_frame_disagree():
    """Two 20x20 calcium frames: frame 1 holds 100 calcium pixels, frame 2 none. Model A segments frame 1 exactly
    and invents 10 pixels on frame 2; model B finds 60 of frame 1's 100 pixels and nothing on frame 2."""
    target = np.zeros((2, 20, 20), int)
    target[0, :10, :10] = 1
    a = target.copy()
    a[1, 15:17, 15:20] = 1
    b = np.zeros_like(target)
    b[0, :6, :10] = 1
    return target, one_hot_prediction(a, 2), one_hot_prediction(b, 2)


def test_pooled_and_per_frame_dice_disagree_on_which_model_is_better():
    target, a, b = pooled_and_per_frame_disagree()
    weights = np.float32([1, 1])
    values = {}
    for name, prediction in (("A", a), ("B", b)):
        pooled, frame = TaskDice((1,)), FrameDice((1,))
        pooled.update_state(target, prediction, weights)
        frame.update_state(target, prediction, weights)
        values[name] = float(pooled.result()), float(frame.result())
    # pooled: A 2*100 / (100 + 110) = 0.952, B 2*60 / (100 + 60) = 0.75
    assert values["A"][0] == pytest.approx(200 / 210) and values["B"][0] == pytest.approx(0.75)
    # per frame (the test's rules): A (1 + 0) / 2 = 0.5 (a false alarm on a calcium-free frame scores 0), B
    # (0.75 + 1) / 2 = 0.875 (both masks empty scores 1)
    assert values["A"][1] == pytest.approx(0.5) and values["B"][1] == pytest.approx(0.875)
    assert values["A"][0] > values["B"][0] and values["A"][1] < values["B"][1]


def test_selection_picks_what_the_test_prefers(tmp_path):
    """Epoch 1 gives model A's predictions, epoch 2 model B's: selection on the per-frame monitor keeps epoch 2,
    the pooled monitor keeps epoch 1."""
    from ivus_tf.run_folder import PhaseFolder
    from ivus_tf.training.callbacks import PhaseCheckpoint
    from ivus_tf.training.config import TrainConfig
    from ivus_tf.training.schemes import phases_of
    from ivus_tf.training.state import PhaseState

    target, a, b = pooled_and_per_frame_disagree()
    logs = []
    for prediction in (a, b):
        epoch = {}
        for metric in task_dice_metrics(("calcium",))["calcium"]:
            metric.update_state(target, prediction, np.float32([1, 1]))
            epoch[f"val_calcium_{metric.name}"] = float(metric.result())
        logs.append(epoch)
    chosen = {}
    for selection in ("per_frame_dice", "pooled_dice"):
        (phase,) = phases_of(TrainConfig(selection_metric=selection))
        folder = tmp_path / selection
        folder.mkdir()
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        checkpoint = PhaseCheckpoint(PhaseFolder(folder), phase.monitor, 2, 0, PhaseState(), lambda m=model: m, False,
                                     lambda text: None)
        checkpoint.set_model(model)
        for epoch, values in enumerate(logs):
            checkpoint.on_epoch_end(epoch, values)
        chosen[selection] = (checkpoint.state.best_epoch, checkpoint.state.best)
    assert chosen["per_frame_dice"] == (1, pytest.approx(0.875))  # B: what the test prefers
    assert chosen["pooled_dice"] == (0, pytest.approx(200 / 210))  # A


def test_frame_dice_matches_numpy_with_empty_rules_and_fractional_weights():
    rng = np.random.default_rng(2)
    metric = {c: FrameDice(c) for c in ((1,), (1, 2))}
    targets, predictions, weights = [], [], []
    for _ in range(3):
        target = rng.integers(0, 3, (4, 5, 5)) * (rng.random((4, 1, 1)) < 0.6)  # some frames all background
        prediction = rng.dirichlet([3, 1, 1], (4, 5, 5)).astype(np.float32)
        weight = rng.choice(np.float32([0, 0.5, 1]), 4)
        for m in metric.values():
            m.update_state(target, prediction, weight)
        targets.append(target), predictions.append(prediction), weights.append(weight)
    targets, predictions, weights = map(np.concatenate, (targets, predictions, weights))
    for class_ids, m in metric.items():
        expected = numpy_frame_dice(targets, predictions, weights, class_ids)
        assert float(m.result()) == pytest.approx(expected, abs=1e-6)
        assert 0 < expected < 1
    empty = FrameDice((1,))
    assert np.isnan(float(empty.result()))
    empty.update_state(np.zeros((1, 3, 3), int), one_hot_prediction(np.zeros((1, 3, 3), int), 2), np.float32([1]))
    assert float(empty.result()) == 1.0  # both empty: a correct "no calcium" frame
    empty.reset_state()
    empty.update_state(np.zeros((1, 3, 3), int), one_hot_prediction(np.zeros((1, 3, 3), int), 2), np.float32([0]))
    assert np.isnan(float(empty.result()))  # only an unlabelled frame: nothing measured
    restored = keras.metrics.deserialize(keras.metrics.serialize(FrameDice((1, 2), name="f")))
    assert isinstance(restored, FrameDice) and restored.class_ids == (1, 2) and restored.name == "f"
    with pytest.raises(ValueError, match="weighted_metrics"):
        FrameDice().update_state(np.zeros((1, 3, 3), int), one_hot_prediction(np.zeros((1, 3, 3), int), 2))
