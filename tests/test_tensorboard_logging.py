"""Tests of `ivus_tf.tensorboard_logging`: contour images, learning rate and HParams, read back from event files."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from tensorboard.plugins.hparams import metadata as hp_metadata

from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.data import PipelineConfig, make_eval_dataset, make_train_dataset
from ivus_tf.losses import GeneralizedDiceLoss
from ivus_tf.metrics import boundary
from ivus_tf.models import build_model
from ivus_tf.overlay import COLOURS
from ivus_tf.tensorboard_logging import ContourImages, contour_overlay, select_frames, write_hparams

tf = import_tensorflow()
BOTH = ("calcium", "wall_lumen")
SIZE = 32


def read_events(folder) -> list[tuple[int, str, str, object]]:
    """(step, tag, plugin name, summary value) of every summary in the event files directly in `folder`."""
    found = []
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.append((event.step, value.tag, value.metadata.plugin_data.plugin_name, value))
    return found


def decode_images(value) -> list[np.ndarray]:
    """RGB images of an image summary (its tensor holds width, height, then one PNG per image)."""
    data = tf.make_ndarray(value.tensor)
    return [cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for png in data[2:]]


def has_color(image: np.ndarray, color) -> bool:
    return bool(np.all(image == np.array(color, np.uint8), axis=-1).any())


@pytest.fixture
def records(make_records):
    # Frame 1 of each case carries calcium labels without calcium; case "c" has no wall-lumen label.
    records = make_records({"a": [(0, BOTH), (1, ("calcium",)), (2, ("wall_lumen",))],
                            "b": [(0, ("calcium",)), (1, ("calcium",)), (2, BOTH)],
                            "c": [(0, ("calcium",)), (1, ("calcium",))]})
    return records


def test_contour_overlay_draws_dashed_truth_over_solid_prediction():
    image = np.full((20, 20), 0.5, np.float32)
    truth = np.zeros((20, 20), np.uint8)
    truth[4:14, 4:14] = 1
    predicted = np.roll(truth, 3, axis=1)
    overlay = contour_overlay(image, truth, predicted, "calcium")
    assert overlay.shape == (20, 20, 3) and overlay.dtype == np.uint8
    green = np.all(overlay == COLOURS["truth"], axis=-1)
    red = np.all(overlay == COLOURS["calcium"], axis=-1)
    border = boundary(truth)
    assert green.any() and not (green & ~border).any()  # only on the true contour...
    assert 0.4 < green.sum() / border.sum() < 0.8  # ...and dashed (3 on, 2 off)
    assert red[4:14, 16].all() and not red[5:13, 8:15].any()  # the predicted right edge, nothing inside
    np.testing.assert_array_equal(overlay[0, 0], [128, 128, 128])
    labels = np.zeros((20, 20), np.uint8)
    labels[2:18, 2:18], labels[6:14, 6:14] = 2, 1
    wall = contour_overlay(image, None, labels, "wall_lumen")
    assert has_color(wall, COLOURS["vessel"]) and has_color(wall, COLOURS["lumen"])
    assert not has_color(wall, COLOURS["truth"])


def test_select_frames_prefers_calcium_and_spreads_over_cases(records):
    selection = select_frames(records, ["a", "b", "c"], BOTH, SIZE, max_frames=3)
    ids = selection["ids"]
    calcium = [ids[r] for r in selection["frames"]["calcium"]]
    assert sorted(case for case, _ in calcium) == ["a", "b", "c"]  # one per case
    for row in selection["frames"]["calcium"]:
        assert selection["targets"]["calcium"][row].any()  # frames with calcium first
    assert [ids[r] for r in selection["frames"]["wall_lumen"]] == [("a", "0"), ("a", "2"), ("b", "2")]
    assert selection["images"].shape == (len(ids), SIZE, SIZE, 1) and selection["images"].dtype == np.float32
    assert select_frames(records, ["a", "b", "c"], BOTH, SIZE, max_frames=3)["ids"] == ids  # deterministic
    one = select_frames(records, ["c", "a"], ("calcium",), SIZE, max_frames=1)
    assert [one["ids"][r][0] for r in one["frames"]["calcium"]] == ["c"]


@pytest.mark.slow
def test_fit_writes_contour_images_and_learning_rate(records, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model("unet_res", BOTH, input_shape=(SIZE, SIZE, 1), width=0.0625)
    model.compile(optimizer=keras.optimizers.Adam(2e-4), loss={t: GeneralizedDiceLoss() for t in BOTH},
                  run_eagerly=True)
    config = PipelineConfig(image_size=SIZE, batch_size=2, tasks=BOTH)
    log_dir = tmp_path / "logs"
    callbacks = [keras.callbacks.TensorBoard(log_dir, write_graph=False),
                 ContourImages(log_dir, records, ["a", "b"], BOTH, SIZE, every_n_epochs=2, max_frames=2)]
    history = model.fit(make_train_dataset(records, ["a", "b", "c"], config), steps_per_epoch=2, epochs=3,
                        validation_data=make_eval_dataset(records, ["a", "b"], config), callbacks=callbacks,
                        shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 3

    images = [(step, tag, value) for step, tag, plugin, value in read_events(log_dir / "images") if plugin == "images"]
    # every 2nd epoch (step 1) and the last epoch (step 2), one tag per task
    assert sorted((step, tag) for step, tag, _ in images) == [(step, f"validation/{task}") for step in (1, 2)
                                                              for task in BOTH]
    for _, _, value in images:
        decoded = decode_images(value)
        assert len(decoded) == 2 and all(image.shape == (SIZE, SIZE, 3) for image in decoded)
        assert all(has_color(image, COLOURS["truth"]) for image in decoded)
        assert "green dashed" in value.metadata.summary_description

    learning_rates = [(step, float(tf.make_ndarray(value.tensor))) for step, tag, _, value in
                      read_events(log_dir / "train") if tag == "epoch_learning_rate"]
    assert [step for step, _ in learning_rates] == [0, 1, 2]
    assert [lr for _, lr in learning_rates] == pytest.approx([2e-4] * 3)


def test_contour_images_written_at_the_last_epoch_when_training_stops_early(records, tmp_path):
    model = build_model("unet_res", ("calcium",), input_shape=(SIZE, SIZE, 1), width=0.0625)
    callback = ContourImages(tmp_path, records, ["a"], ("calcium",), SIZE, every_n_epochs=5, max_frames=1)
    callback.set_model(model)
    callback.set_params({"epochs": 100})
    callback.on_train_begin()
    for epoch in range(7):
        callback.on_epoch_end(epoch)
    callback.on_train_end()  # e.g. EarlyStopping after epoch 6
    steps = [step for step, _, plugin, _ in read_events(tmp_path / "images") if plugin == "images"]
    assert steps == [4, 6]


def test_hparams_of_a_grid(tmp_path):
    runs = {"run_0": {"arch": "unet_res", "lam": 1.0, "tasks": ("calcium", "wall_lumen"), "epochs": 10,
                      "pretrained": None, "flip": True},
            "run_1": {"arch": "deeplabv3", "lam": 0.5, "tasks": ("calcium",), "epochs": 10, "pretrained": None,
                      "flip": False}}
    for i, (name, hparams) in enumerate(runs.items()):
        write_hparams(tmp_path / name, hparams, {"test": {"calcium_dice": 0.5 + i / 10,
                                                          "calcium_average_hausdorff_mm": None}}, step=9)

    events = read_events(tmp_path / "run_1")
    start = [hp_metadata.parse_session_start_info_plugin_data(v.metadata.plugin_data.content)
             for _, tag, _, v in events if tag == hp_metadata.SESSION_START_INFO_TAG]
    assert len(start) == 1
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start[0].hparams.items()}
    assert values == {"arch": "deeplabv3", "lam": 0.5, "tasks": "calcium", "epochs": 10.0, "pretrained": "None",
                      "flip": False}
    scalars = {tag: (step, float(tf.make_ndarray(v.tensor))) for step, tag, plugin, v in events
               if plugin == "scalars"}
    assert scalars["test/calcium_dice"] == (9, pytest.approx(0.6))
    assert math.isnan(scalars["test/calcium_average_hausdorff_mm"][1])

    assert not [tag for _, tag, _, _ in read_events(tmp_path) if tag == hp_metadata.EXPERIMENT_TAG]  # per run only
    with pytest.raises(TypeError, match="metric 'tasks' must be a number"):
        write_hparams(tmp_path / "bad", {}, {"tasks": "calcium"})
