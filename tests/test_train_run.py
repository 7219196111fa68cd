"""Training runs end to end on tiny records: files, resume, transfer, lambda, NaN guard, evaluation by hand.

Tiny U-Nets (width 1/16) on 64x64 inputs from 72x80 frames (so evaluation really resizes back), 2 epochs of 2
steps, in eager mode: compiling a train step takes ~20 s on 2 CPU cores, more than these runs take in eager mode.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import synthetic_frame
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.training.config import TrainConfig
from ivus_tf.training.run import run_training

tf = import_tensorflow()
import keras  # noqa: E402  (after the quiet TensorFlow import)

ORIGINAL = (72, 80)
SPACING_MM = 0.03


def values(weights) -> list:
    """numpy copies of Keras variables."""
    return [keras.ops.convert_to_numpy(w) for w in weights]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """6 pullbacks of 4 frames, calcium and wall-lumen labels on alternate frames (as in the paper)."""
    from tfrecords_builder.writer import write_records

    frames = {}
    for i in range(6):
        case = f"case{i}"
        frames[case] = [synthetic_frame(case, f"{j:02d}", ORIGINAL, ("calcium",) if j % 2 == 0 else ("wall_lumen",),
                                        seed=10 * i + j, pixel_spacing_mm=SPACING_MM) for j in range(4)]
    out = tmp_path_factory.mktemp("train") / "records"
    write_records(frames, out)
    return out


def tiny(records, out, **changes) -> TrainConfig:
    config = TrainConfig(scheme="calcium", arch="unet_res", width=0.0625, image_size=64, batch_size=4, epochs=2,
                         steps_per_epoch=2, learning_rate=1e-2, data=str(records), out=str(out), repeats=1, folds=2,
                         tb_image_every_epochs=1, tb_image_frames=1, run_eagerly=True)
    return dataclasses.replace(config, **changes)


class Interrupt(keras.callbacks.Callback):
    """Raise KeyboardInterrupt (what Ctrl-C raises) when the model named `*suffix` begins `epoch` (0-based)."""

    def __init__(self, suffix: str, epoch: int):
        super().__init__()
        self.suffix, self.epoch = suffix, epoch

    def on_epoch_begin(self, epoch, logs=None):
        if self.model.name.endswith(self.suffix) and epoch == self.epoch:
            raise KeyboardInterrupt


class Probe(keras.callbacks.Callback):
    """Record, at train begin, the model name, the optimizer's step, the encoder weights and the other layers'
    weights ({layer name: weights}) into `seen`."""

    def __init__(self, seen: list):
        super().__init__()
        self.seen = seen

    def on_train_begin(self, logs=None):
        encoder = values(self.model.get_layer("encoder").weights)
        self.seen.append((self.model.name, int(self.model.optimizer.iterations.numpy()), encoder,
                          layer_weights(self.model)))


def encoder_weights(path):
    return values(keras.models.load_model(path, compile=False).get_layer("encoder").weights)


def layer_weights(model) -> dict:
    """{layer name: weights} of the layers outside the encoder."""
    return {layer.name: values(layer.weights) for layer in model.layers if layer.weights and layer.name != "encoder"}


def tags(folder):
    """Summary tags written in the event files directly inside `folder`."""
    found = set()
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            found |= {value.tag for value in event.summary.value}
    return found


@pytest.fixture(scope="module")
def calcium_run(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("calcium") / "run"
    return run_training(tiny(records, out), log=lambda text: None)


@pytest.mark.slow
def test_calcium_scheme_writes_the_run_folder(calcium_run, records):
    run_dir = calcium_run["run_dir"]
    for name in ("config.yaml", "model.keras", "metrics.json", "done.json", "checkpoints/calcium/best.keras",
                 "checkpoints/calcium/last.weights.h5", "checkpoints/calcium/state.json"):
        assert (run_dir / name).is_file(), name
    config_text = (run_dir / "config.yaml").read_text()
    assert "# package_version: " in config_text and "splits: " in config_text and "scheme: calcium" in config_text
    assert f"splits: {records.parent / 'records-splits.json'}" in config_text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tasks"] == ["calcium"] and metrics["selection"]["calcium"]["epochs_run"] == 2
    # selected on the test's metric: mean per-frame Dice with the empty-mask rules (at the training resolution)
    assert metrics["selection"]["calcium"]["monitor"] == "val_calcium_frame_dice"
    assert metrics["run"]["selection_metric"] == "per_frame_dice" and metrics["run"]["seed"] == 0
    frames = metrics["calcium"]["frames"]
    assert len(frames) == 2 and set(frames[0]) == {"case_id", "frame_id", "dice", "average_hausdorff_mm",
                                                    "empty_case"}
    assert set(metrics["calcium"]["summary"]["dice"]) >= {"mean", "std", "median"} and metrics["calcium"]["per_case"]
    assert {"epoch_loss", "epoch_calcium_dice", "epoch_learning_rate"} <= tags(run_dir / "tb" / "calcium" / "train")
    assert {"epoch_loss", "epoch_calcium_dice", "epoch_calcium_frame_dice"} <= \
        tags(run_dir / "tb" / "calcium" / "validation")
    assert "validation/calcium" in tags(run_dir / "tb" / "calcium" / "images")
    assert "_hparams_/session_start_info" in tags(run_dir / "tb")
    assert "test/calcium_dice" in tags(run_dir / "tb")


@pytest.mark.slow
def test_metrics_json_holds_the_rule_baseline_fitted_on_the_training_cases(calcium_run, records):
    from ivus_tf import metrics as M
    from ivus_tf.baselines import RuleParams, predict_calcium
    from ivus_tf.data.records import iterate_frames
    from ivus_tf.evaluation import format_summary
    from ivus_tf.splits import fold_cases, read_splits

    metrics = json.loads((calcium_run["run_dir"] / "metrics.json").read_text())
    rule = metrics["calcium"]["rule_baseline"]
    train, _, test = fold_cases(read_splits(records.parent / "records-splits.json"), 0, 0, "calcium")
    assert rule["fitted_on"]["case_ids"] == train and not set(train) & set(test)
    assert rule["fitted_on"]["frames"] == 2 * len(train) and 0 <= rule["fitted_on"]["mean_dice"] <= 1
    params = RuleParams.from_dict(rule["params"])
    assert [(f["case_id"], f["frame_id"]) for f in rule["frames"]] == [
        (f["case_id"], f["frame_id"]) for f in metrics["calcium"]["frames"]]
    truth = {(f["case_id"], f["frame_id"]): f for f in iterate_frames(records, test)}
    for entry in rule["frames"]:  # the stored parameters re-derive every stored number, at original resolution
        frame = truth[entry["case_id"], entry["frame_id"]]
        spacing = frame["pixel_spacing_mm"]
        prediction = predict_calcium(frame["image"], spacing, params)
        assert prediction.shape == ORIGINAL
        assert entry == {"case_id": entry["case_id"], "frame_id": entry["frame_id"],
                         **M.evaluate_frame(prediction, frame["calcium_mask"], spacing)}
    assert rule["summary"] == M.summarize_frames(rule["frames"])
    assert set(rule["per_case"]) == set(test)
    line = f"calcium rule (bright edge + shadow, fitted on {len(train)} training cases): Dice"
    assert line in format_summary(metrics)


@pytest.mark.slow
def test_a_finished_run_is_not_retrained_and_a_changed_config_is_refused(calcium_run, records):
    from ivus_tf.core.errors import InputError

    run_dir = calcium_run["run_dir"]
    before = (run_dir / "model.keras").stat().st_mtime_ns
    lines = []
    again = run_training(tiny(records, run_dir), log=lines.append)
    assert again["finished_before"] and any("already finished; not retraining" in line for line in lines)
    assert (run_dir / "model.keras").stat().st_mtime_ns == before
    assert again["metrics"]["calcium"]["summary"] == calcium_run["metrics"]["calcium"]["summary"]
    with pytest.raises(InputError, match="holds a run with other settings \\(learning_rate 0.01 -> 0.001\\)"):
        run_training(tiny(records, run_dir, learning_rate=1e-3), log=lambda text: None)


@pytest.mark.slow
def test_resume_after_interruption_continues_where_it_stopped(calcium_run, records, tmp_path):
    """Killed after epoch 1, the same run started again resumes at epoch 2 with Adam's state and the same batches:
    it ends with the very weights of the uninterrupted run (eager CPU ops are deterministic here)."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny(records, out), log=lambda text: None, extra_callbacks=[Interrupt("_calcium", 1)])
    state = json.loads((out / "checkpoints" / "calcium" / "state.json").read_text())
    assert state["epoch"] == 1 and not state["done"] and not (out / "metrics.json").exists()
    lines, seen = [], []
    run_training(tiny(records, out), log=lines.append, extra_callbacks=[Probe(seen)])
    assert any("phase calcium: resuming at epoch 2/2" in line for line in lines)
    assert seen[0][1] == 2  # Adam's step counter restored: 1 epoch x 2 steps
    state = json.loads((out / "checkpoints" / "calcium" / "state.json").read_text())
    assert [epoch["epoch"] for epoch in state["history"]] == [1, 2]
    reference = json.loads((calcium_run["run_dir"] / "checkpoints" / "calcium" / "state.json").read_text())
    assert state["best"] == pytest.approx(reference["best"]) and state["wait"] == reference["wait"]
    for resumed, uninterrupted in zip(encoder_weights(out / "checkpoints" / "calcium" / "best.keras"),
                                      encoder_weights(calcium_run["run_dir"] / "checkpoints" / "calcium" /
                                                      "best.keras")):
        np.testing.assert_allclose(resumed, uninterrupted, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_pretrain_transfers_all_but_the_classifier_and_resumes_in_its_second_phase(records, tmp_path):
    out = tmp_path / "run"
    config = tiny(records, out, scheme="pretrain", pretrain_epochs=1)
    seen, lines = [], []
    with pytest.raises(KeyboardInterrupt):
        run_training(config, log=lines.append, extra_callbacks=[Probe(seen), Interrupt("_calcium", 1)])
    wall_lumen_best = out / "checkpoints" / "wall_lumen" / "best.keras"
    assert json.loads((out / "checkpoints" / "wall_lumen" / "state.json").read_text())["done"]
    assert [probe[0] for probe in seen] == ["unet_res_wall_lumen", "unet_res_calcium"]
    for transferred, pretrained in zip(seen[1][2], encoder_weights(wall_lumen_best)):
        np.testing.assert_array_equal(transferred, pretrained)  # equal after transfer
    # the decoder (the U-Net's up-path) comes from the wall-lumen model too; only the classifier starts fresh
    pretrained = layer_weights(keras.models.load_model(wall_lumen_best, compile=False))
    decoder = [name for name in seen[1][3] if name.startswith("decoder_")]
    assert len(decoder) > 30 and set(seen[1][3]) - set(decoder) == {"calcium_head_logits"}
    for name in decoder:
        for transferred, learned in zip(seen[1][3][name], pretrained[name]):
            np.testing.assert_array_equal(transferred, learned, err_msg=name)
    assert any("phase calcium: every weight but the classifier initialised from" in line for line in lines)
    assert "pretrain_transfer: all_but_classifier" in (out / "config.yaml").read_text()
    lines, seen = [], []
    result = run_training(config, log=lines.append, extra_callbacks=[Probe(seen)])
    assert any("phase wall_lumen: already done" in line for line in lines)
    assert any("phase calcium: resuming at epoch 2/2" in line for line in lines)
    assert [probe[0] for probe in seen] == ["unet_res_calcium"] and seen[0][1] == 2
    fine_tuned = encoder_weights(out / "model.keras")
    assert any(not np.array_equal(a, b) for a, b in zip(fine_tuned, encoder_weights(wall_lumen_best)))
    assert result["metrics"]["tasks"] == ["calcium"] and set(result["metrics"]["selection"]) == {"wall_lumen",
                                                                                                 "calcium"}
    assert (out / "tb" / "wall_lumen" / "train").is_dir() and (out / "tb" / "calcium" / "train").is_dir()


def test_frozen_encoder_stays_fixed_while_the_rest_trains(records):
    from ivus_tf.data.pipeline import make_train_dataset
    from ivus_tf.training.phase import build_phase_model, compile_phase_model, pipeline_config
    from ivus_tf.training.schemes import phases_of

    config = tiny(records, "unused", scheme="pretrain", freeze_encoder_epochs=1)
    phase = phases_of(config)[1]
    model = build_phase_model(config, phase)
    compile_phase_model(model, config, phase, frozen=True)
    encoder = {id(w) for w in model.get_layer("encoder").weights}
    assert encoder and not encoder & {id(w) for w in model.trainable_weights}
    before = values(model.weights)
    data = make_train_dataset(records, ["case0", "case1"], pipeline_config(config, phase.tasks))
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    changed = [not np.array_equal(old, new) for old, new in zip(before, values(model.weights))]
    in_encoder = [id(w) in encoder for w in model.weights]
    assert not any(c for c, e in zip(changed, in_encoder) if e)  # batch norm statistics included
    assert any(c for c, e in zip(changed, in_encoder) if not e)


@pytest.mark.slow
def test_multitask_lambda_weights_the_per_task_losses(records):
    """lambda -> 0: the calcium loss has no say (its head does not move), the wall-lumen loss falls fastest;
    lambda large: the shared network serves calcium, whose loss then falls further than with lambda 0."""
    from ivus_tf.data.pipeline import make_train_dataset
    from ivus_tf.training.phase import build_phase_model, compile_phase_model, pipeline_config
    from ivus_tf.training.schemes import phases_of

    results = {}
    for lam in (0.0, 1000.0):
        config = tiny(records, "unused", scheme="multitask", lam=lam)
        phase = phases_of(config)[0]
        keras.utils.set_random_seed(0)
        model = build_phase_model(config, phase)
        compile_phase_model(model, config, phase)
        (head,) = values([model.get_layer("calcium_head_logits").kernel])
        data = make_train_dataset(records, ["case0", "case1", "case2", "case3"], pipeline_config(config, phase.tasks))
        history = model.fit(data, steps_per_epoch=6, epochs=1, verbose=0, shuffle=False).history
        loss, calcium, wall_lumen = (history[k][-1] for k in ("loss", "calcium_loss", "wall_lumen_loss"))
        assert loss == pytest.approx(lam * calcium + wall_lumen, rel=1e-4)
        results[lam] = (calcium, wall_lumen, np.array_equal(head, *values([model.get_layer(
            "calcium_head_logits").kernel])))
    assert results[0.0][2] and not results[1000.0][2]
    assert results[1000.0][0] < results[0.0][0]  # calcium learns with lambda large
    assert results[0.0][1] < results[1000.0][1]  # wall-lumen learns with lambda small


@pytest.mark.slow
def test_multitask_evaluation_matches_metrics_by_hand_on_saved_predictions(records, tmp_path):
    import cv2

    from ivus_tf import metrics as M
    from ivus_tf.data.records import iterate_frames

    out = tmp_path / "run"
    result = run_training(tiny(records, out, scheme="multitask", save_predictions=True, tb_image_every_epochs=0,
                               rule_baseline=False), log=lambda text: None)
    metrics = result["metrics"]
    assert metrics["tasks"] == ["calcium", "wall_lumen"]
    assert "rule_baseline" not in metrics["calcium"] and "predict_nothing_baseline" in metrics["calcium"]
    truth = {(f["case_id"], f["frame_id"]): f for f in iterate_frames(records, metrics["case_ids"])}
    for entry in metrics["calcium"]["frames"]:
        frame = truth[entry["case_id"], entry["frame_id"]]
        predicted = cv2.imread(str(out / "predictions" / entry["case_id"] / f"{entry['frame_id']}_calcium.png"),
                               cv2.IMREAD_UNCHANGED)
        assert predicted.shape == ORIGINAL
        by_hand = M.evaluate_frame(predicted > 0, frame["calcium_mask"], SPACING_MM)
        assert entry["dice"] == pytest.approx(by_hand["dice"], nan_ok=True)
        assert entry["average_hausdorff_mm"] == pytest.approx(by_hand["average_hausdorff_mm"], nan_ok=True)
        assert entry["empty_case"] == by_hand["empty_case"]
    assert metrics["lumen"]["frames"]
    for entry in metrics["lumen"]["frames"]:
        frame = truth[entry["case_id"], entry["frame_id"]]
        predicted = cv2.imread(str(out / "predictions" / entry["case_id"] / f"{entry['frame_id']}_wall_lumen.png"),
                               cv2.IMREAD_UNCHANGED)
        by_hand = M.wall_lumen_metrics(predicted, frame["wall_lumen_mask"], SPACING_MM)["lumen"]
        assert entry["dice"] == pytest.approx(by_hand["dice"], nan_ok=True)
        assert entry["average_hausdorff_mm"] == pytest.approx(by_hand["average_hausdorff_mm"], nan_ok=True)


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(records, tmp_path, capsys, monkeypatch):
    import ivus_tf.training.phase as phase_module
    from ivus_tf.train import main

    real = phase_module.make_train_dataset

    def poisoned(*args, **kwargs):  # NaN images in the 4th batch: epoch 2, step 2
        return real(*args, **kwargs).enumerate().map(
            lambda i, batch: (tf.where(i == 3, float("nan"), batch[0]), *batch[1:]))

    monkeypatch.setattr(phase_module, "make_train_dataset", poisoned)
    out = tmp_path / "run"
    argv = ["--data", str(records), "--out", str(out), "--arch", "unet_res", "--width", "0.0625", "--image-size",
            "64", "--batch-size", "4", "--epochs", "3", "--steps-per-epoch", "2", "--set", "folds=2", "--set",
            "repeats=1", "--set", "run_eagerly=true", "--set", "tb_image_every_epochs=0"]
    status = main(argv)
    err = capsys.readouterr().err
    last = out / "checkpoints" / "calcium" / "last.weights.h5"
    assert status == 3 and err.count("\n") == 1
    assert err.startswith("error: phase calcium: loss became nan at epoch 2/3, step 2/2 (global step 4); training "
                          f"stopped, the last good checkpoint {last} (after epoch 1) is kept")
    state = json.loads((out / "checkpoints" / "calcium" / "state.json").read_text())
    assert state["epoch"] == 1 and not (out / "metrics.json").exists()
    from ivus_tf.training.config import load_config
    from ivus_tf.training.phase import build_phase_model
    from ivus_tf.training.schemes import phases_of

    config = load_config(out / "config.yaml")
    model = build_phase_model(config, phases_of(config)[0])
    model.load_weights(str(last))
    assert all(np.isfinite(w).all() for w in values(model.weights))


def test_selection_and_early_stopping_state_survive_a_restart(tmp_path):
    """PhaseCheckpoint keeps the best epoch (strictly better, NaN never is), counts patience across a restart
    (the state comes back from state.json), and stops once `patience` epochs brought nothing better."""
    from ivus_tf.run_folder import PhaseFolder
    from ivus_tf.training.callbacks import PhaseCheckpoint
    from ivus_tf.training.state import read_state

    files = PhaseFolder(tmp_path)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")

    def callback():
        checkpoint = PhaseCheckpoint(files, "val_calcium_dice", epochs=10, patience=3, state=read_state(files),
                                     snapshot=lambda: model, frozen=False, log=lambda text: None)
        checkpoint.set_model(model)
        return checkpoint

    first = callback()
    for epoch, value in enumerate([0.2, 0.5, float("nan")]):
        first.on_epoch_end(epoch, {"val_calcium_dice": value, "loss": 1.0})
    state = read_state(files)
    assert (state.epoch, state.best, state.best_epoch, state.wait, state.done) == (3, 0.5, 1, 1, False)
    assert (tmp_path / "best.keras").is_file() and (tmp_path / "last.weights.h5").is_file()
    second = callback()  # a new process: the state comes from disk
    second.on_epoch_end(3, {"val_calcium_dice": 0.5, "loss": 1.0})  # equal is not better
    assert not model.stop_training
    second.on_epoch_end(4, {"val_calcium_dice": 0.4, "loss": 1.0})
    state = read_state(files)
    assert model.stop_training and (state.wait, state.done, state.stopped_early, state.best_epoch) == (3, True, True, 1)
    assert [epoch["epoch"] for epoch in state.history] == [1, 2, 3, 4, 5]
    assert state.history[2]["val_calcium_dice"] is None  # NaN stored as null
