"""Issue 13, training: the batch bounded by the data and the memory, records checked before training and keyed to
the run, file-system errors as one line, the predict-nothing baselines of every region, shorter epoch lines and
no duplicate TensorBoard tags. Each test failed on main before its fix."""

from __future__ import annotations

import dataclasses
import errno
import json
import os

import numpy as np
import pytest
from test_hardening_data import unwritable_parent

from conftest import synthetic_frame
from ivus_tf.core.errors import InputError
from ivus_tf.training.config import TrainConfig


def write(root, name="records", seed=0, cases=6, frames=4):
    """`cases` pullbacks of `frames` 48x48 frames, calcium and wall-lumen labels on alternate frames."""
    from tfrecords_builder.writer import write_records

    data = {f"case{i}": [synthetic_frame(f"case{i}", f"{j:02d}", (48, 48),
                                         ("calcium",) if j % 2 == 0 else ("wall_lumen",), seed=seed + 10 * i + j)
                         for j in range(frames)] for i in range(cases)}
    return write_records(data, root / name, overwrite=True) and root / name


def tiny(records, out, **changes) -> TrainConfig:
    config = TrainConfig(scheme="calcium", arch="unet_res", width=0.0625, image_size=32, batch_size=2, epochs=1,
                         steps_per_epoch=1, data=str(records), out=str(out), repeats=1, folds=2,
                         tb_image_every_epochs=0, run_eagerly=True)
    return dataclasses.replace(config, **changes)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IVUS_TF_CACHE", str(tmp_path / "cache"))  # the verification cache of this test only


# --------------------------------------------------------------------------------- 1: the batch is bounded

@pytest.mark.parametrize("scheme", ["calcium", "multitask", "pretrain"])
def test_batch_larger_than_the_training_frames_is_refused_before_the_run_folder(tmp_path, cache, scheme):
    from ivus_tf.training.run import plan_run

    records = write(tmp_path)
    with pytest.raises(InputError, match=r"batch_size 100000 takes \d+ (calcium|wall_lumen)-labelled frames per "
                                         r"batch, but the training cases of phase \w+ \(repeat 0 fold 0\) hold only "
                                         r"\d+; use --batch-size \d+ or less"):
        plan_run(tiny(records, tmp_path / "run", scheme=scheme, batch_size=100000), lambda text: None)
    assert not (tmp_path / "run").exists()


def test_training_memory_estimate_matches_the_measured_peaks():
    from ivus_tf.training.run import train_bytes

    measured = {("unet_res", 2): 2.7e9, ("unet_res", 12): 8.1e9, ("deeplabv3", 2): 2.4e9, ("deeplabv3", 12): 5.7e9}
    for (arch, batch), peak in measured.items():  # BENCHMARKS.md, bench/bench_models.py: peak RSS on CPU
        estimate = train_bytes(TrainConfig(arch=arch, batch_size=batch, width=1.0, image_size=256))
        assert abs(estimate - peak) < 0.2e9, (arch, batch, estimate)


def test_batch_that_cannot_fit_in_memory_is_refused(tmp_path, cache, monkeypatch):
    from ivus_tf.core import memory
    from ivus_tf.training.run import plan_run

    records = write(tmp_path, cases=6, frames=40)
    monkeypatch.setattr(memory, "memory_bytes", lambda: 4 * 10**9)
    with pytest.raises(InputError, match=r"batch_size 16 of 256x256 frames needs about [\d.]+ GB to train "
                                         r"deeplabv3 at width 1, more than this machine's 4.0 GB; use --batch-size "
                                         r"\d+ or less"):
        plan_run(tiny(records, tmp_path / "run", arch="deeplabv3", width=1.0, image_size=256, batch_size=16),
                 lambda text: None)
    plan_run(tiny(records, tmp_path / "run", arch="deeplabv3", width=1.0, image_size=256, batch_size=2),
             lambda text: None)  # 2 frames fit


# ---------------------------------------------------------------------- 6, 9: records checked and keyed

def test_corrupt_or_truncated_record_is_refused_before_the_run_folder(tmp_path, cache, capsys):
    from ivus_tf.train import main

    records = write(tmp_path)
    path = records / "cases" / "case3.tfrecord"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    args = ["--data", str(records), "--out", str(tmp_path / "run"), "--arch", "unet_res", "--width", "0.0625",
            "--image-size", "32", "--batch-size", "2", "--set", "repeats=1", "--set", "folds=2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: sha256 differs from index.json") and err.count("\n") == 1
    path.write_bytes(bytes(data[:-100]))
    assert main(args) == 2
    assert f"error: {path}: {len(data) - 100} bytes but index.json says {len(data)}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_resumed_on_rebuilt_records_is_refused(tmp_path, cache):
    from ivus_tf.run_folder import RunFolder
    from ivus_tf.training.run import _claim_run_dir, plan_run

    records = write(tmp_path, seed=0)
    config = tiny(records, tmp_path / "run")
    assert _claim_run_dir(plan_run(config, lambda text: None)) is False  # started, nothing trained yet
    assert RunFolder(tmp_path / "run").read_records_json()["records"] == str(records.resolve())
    assert json.loads((tmp_path / "run" / "records.json").read_text())["records"] == str(records.resolve())
    _claim_run_dir(plan_run(config, lambda text: None))  # the same records: resumes
    write(tmp_path, seed=100)  # rebuilt: the same case ids, other frames
    with pytest.raises(InputError, match=r"run: the run started on other records than .*records holds now"):
        _claim_run_dir(plan_run(config, lambda text: None))


# ------------------------------------------------------------------------------- 7: file-system errors

def test_train_out_that_is_a_file_is_one_line(tmp_path, cache, capsys):
    from ivus_tf.train import main

    records = write(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    base = ["--data", str(records), "--arch", "unet_res", "--width", "0.0625", "--image-size", "32",
            "--batch-size", "2", "--set", "repeats=1", "--set", "folds=2"]
    for out in (blocker, blocker / "run", unwritable_parent(tmp_path) / "run"):
        assert main(base + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert blocker.read_text() == "x"


def test_train_on_records_whose_folder_is_not_writable_says_how_to_keep_the_splits_elsewhere(tmp_path, cache,
                                                                                           monkeypatch):
    from ivus_tf import splits
    from ivus_tf.training.run import plan_run

    records = write(tmp_path)
    if os.geteuid() != 0:
        tmp_path.chmod(0o555)
    else:  # root writes anywhere: make writing the splits file fail as it does for a user
        real = splits.write_splits

        def refuse(path, splits_data):
            if str(path).startswith(str(tmp_path) + "/"):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, splits_data)

        monkeypatch.setattr(splits, "write_splits", refuse)
    try:
        with pytest.raises(InputError, match=r"records-splits.json: cannot write the splits file beside the records "
                                             r"\(.*Permission denied.*\); pass --set splits=PATH"):
            plan_run(tiny(records, tmp_path / "run"), lambda text: None)
        plan_run(tiny(records, tmp_path.parent / f"{tmp_path.name}-run", splits=str(tmp_path.parent / "s.json")),
                 lambda text: None)
    finally:
        tmp_path.chmod(0o755)


# ----------------------------------------------------------------------------- the demo's printed results

class Nothing:
    """A model predicting background everywhere: its scores are the predict-nothing baselines."""

    def predict_on_batch(self, images):
        n, s = images.shape[0], images.shape[1]

        def one_hot(classes):
            return np.concatenate([np.ones((n, s, s, 1)), np.zeros((n, s, s, classes - 1))], -1)

        return {"calcium": one_hot(2), "wall_lumen": one_hot(3)}


def test_metrics_and_summary_give_the_predict_nothing_baseline_of_every_region(tmp_path):
    from ivus_tf.evaluation import evaluate_model, format_summary

    records = write(tmp_path)
    metrics = evaluate_model(Nothing(), records, ["case0", "case1"], ("calcium", "wall_lumen"), 32, batch_size=4)
    for section in ("lumen", "vessel_wall", "vessel"):
        baseline = metrics[section]["predict_nothing_baseline"]
        assert baseline["dice"]["mean"] == metrics[section]["summary"]["dice"]["mean"] == 0.0
    lines = format_summary(metrics).splitlines()
    for what in ("calcium", "lumen", "vessel wall", "vessel"):
        assert any(line.startswith(f"  predicting no {what}: Dice ") for line in lines), lines


def test_printed_tensorboard_command_runs_from_a_fresh_shell(monkeypatch, tmp_path):
    from ivus_tf.core import commands

    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    for name in ("python", "tensorboard"):
        (venv / name).write_text("#!/bin/sh\n")
        (venv / name).chmod(0o755)
    monkeypatch.setattr(commands.sys, "executable", str(venv / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a fresh shell: the venv is not activated
    assert commands.tool("tensorboard") == ".venv/bin/tensorboard"
    assert commands.python() == ".venv/bin/python"
    monkeypatch.setenv("PATH", f"{venv}:/usr/bin:/bin")  # activated: the plain name works
    assert commands.tool("tensorboard") == "tensorboard"
    assert commands.python() == "python"


# -------------------------------------------------------------------- per-epoch lines and TensorBoard tags

def test_epoch_line_is_short_and_keeps_the_headline_metrics():
    from ivus_tf.training.callbacks import epoch_line

    logs = {name: 0.5 for name in (
        "calcium_dice", "calcium_loss", "loss", "val_calcium_dice", "val_calcium_loss", "val_loss",
        "val_wall_lumen_dice", "val_wall_lumen_loss", "val_wall_lumen_lumen_dice", "val_wall_lumen_vessel_wall_dice",
        "wall_lumen_dice", "wall_lumen_loss", "wall_lumen_lumen_dice", "wall_lumen_vessel_wall_dice")}
    line = epoch_line(3, 100, 12.3, logs)
    assert len(line) < 160, line
    assert line.startswith("epoch 4/100 (12 s): loss 0.5000, calcium_dice 0.5000, wall_lumen_dice 0.5000; val: ")
    assert "val_wall_lumen_lumen_dice" not in line and "lumen_dice" not in line.replace("wall_lumen_dice", "")


def test_tensorboard_callback_writes_no_duplicate_evaluation_tags(tmp_path):
    from ivus_tf.core.tf_import import import_tensorflow

    import_tensorflow()  # quietly, before Keras imports it
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ivus_tf.training.callbacks import TensorBoard

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", run_eagerly=True)
    x = np.zeros((4, 2), np.float32)
    model.fit(x, x[:, :1], validation_data=(x, x[:, :1]), epochs=1, verbose=0,
              callbacks=[TensorBoard(str(tmp_path / "tb"), write_graph=False, profile_batch=0)])
    tags = []
    for folder in ("train", "validation"):
        events = EventAccumulator(str(tmp_path / "tb" / folder), size_guidance={"tensors": 0})
        events.Reload()
        tags += events.Tags()["tensors"]
    assert "epoch_loss" in tags and not [tag for tag in tags if tag.startswith("evaluation_")], tags
