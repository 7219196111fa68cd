"""Issue 13, the grid: runs of other settings never mixed into one grid folder, progress and an ETA while a run
trains, an "interrupted" line, GPUs that do not exist. Each test failed on main before its fix."""

from __future__ import annotations

import json

import pytest
from test_grid import result_line, write_grid, write_grid_records

from ivus_tf.core.errors import InputError
from ivus_tf.grid.__main__ import main as grid_main

ONE_RUN = "archs: [unet_res]\nschemes: [calcium]\nrepeats: [0]\nfolds: [0]\n"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """test_grid's records folder (`write_grid_records`), written once per module."""
    return write_grid_records(tmp_path_factory.mktemp("grid_records"))


def recorded_with(grid_dir, settings: dict) -> None:
    """A results.jsonl holding the grid's one run, recorded with `settings`."""
    from ivus_tf.grid.results import make_result_line

    grid_dir.mkdir(parents=True, exist_ok=True)
    line = make_result_line(run_id="unet_res-calcium-r0-f0", arch="unet_res", backbone="none", scheme="calcium",
                            lam=None, repeat=0, fold=0, seed=0, metrics={"calcium": {"dice": 0.5,
                                                                                     "average_hausdorff_mm": 0.3}},
                            run_dir="runs/unet_res-calcium-r0-f0", wall_time_s=1.0, settings=settings)
    (grid_dir / "results.jsonl").write_text(line)


def settings_of(path, grid_dir) -> dict:
    from ivus_tf.grid.config import expand_grid, load_grid_config
    from ivus_tf.grid.runner import run_settings
    from ivus_tf.training.run import plan_run

    run = expand_grid(*load_grid_config(path), grid_dir.resolve())[0]
    plan = plan_run(run.config, lambda text: None)
    return run_settings(plan.config, plan.records_fingerprint)


def test_a_recorded_run_of_other_settings_is_refused_naming_the_fields(tmp_path, records, capsys, monkeypatch):
    import ivus_tf.training.run

    grid_dir = tmp_path / "G"
    first = write_grid(tmp_path / "a", records, ONE_RUN)
    recorded_with(grid_dir, settings_of(first, grid_dir))
    monkeypatch.setattr(ivus_tf.training.run, "run_training", lambda *a, **k: pytest.fail("a run started"))
    assert grid_main(["--config", str(first), "--out", str(grid_dir)]) == 0  # the same grid: recorded, skipped
    capsys.readouterr()
    second = write_grid(tmp_path / "b", records, ONE_RUN + "train_overrides: {epochs: 3, learning_rate: 0.001}\n")
    assert grid_main(["--config", str(second), "--out", str(grid_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run unet_res-calcium-r0-f0 is recorded in results.jsonl with other settings " \
                                   "(epochs 2 -> 3; learning_rate 0.01 -> 0.001)" in err, err


def test_a_recorded_run_on_other_records_is_refused(tmp_path, records):
    from ivus_tf.grid.runner import prepare_grid

    grid_dir = tmp_path / "G"
    path = write_grid(tmp_path, records, ONE_RUN)
    settings = settings_of(path, grid_dir)
    recorded_with(grid_dir, {**settings, "records_fingerprint": "0" * 64})
    with pytest.raises(InputError, match=r"with other settings \(records_fingerprint 000000000000 -> [0-9a-f]{12}\)"):
        prepare_grid(path, grid_dir, log=lambda text: None)


def test_a_run_recorded_before_the_loss_field_existed_is_the_paper_loss(tmp_path, records):
    from ivus_tf.grid.runner import prepare_grid

    grid_dir = tmp_path / "G"
    path = write_grid(tmp_path / "a", records, ONE_RUN)
    old = {k: v for k, v in settings_of(path, grid_dir).items() if k != "loss"}
    recorded_with(grid_dir, old)
    prepare_grid(path, grid_dir, log=lambda text: None)  # recorded with GDL, the loss it trained with: accepted
    other = write_grid(tmp_path / "b", records, ONE_RUN + "train_overrides: {epochs: 2, loss: gdl_ce}\n")
    with pytest.raises(InputError, match=r"with other settings \(loss None -> 'gdl_ce'\)"):
        prepare_grid(other, grid_dir, log=lambda text: None)


def test_results_lines_without_settings_are_still_read():
    from ivus_tf.grid.results import validate_result

    record = json.loads(result_line("a"))
    del record["settings"]  # a line written before settings were recorded
    assert validate_result(record)["settings"] is None
    with pytest.raises(InputError, match="settings must be an object"):
        validate_result({**record, "settings": [1, 2]})


def test_devices_that_do_not_exist_are_refused():
    from ivus_tf.grid.devices import parse_devices

    with pytest.raises(InputError, match=r"--devices '7': this machine has no GPU 7 \(it has no NVIDIA GPU\); use "
                                         "'cpu'"):
        parse_devices("7", gpus=0)
    with pytest.raises(InputError, match=r"no GPU 2 \(it has GPUs 0-1\)"):
        parse_devices("0,2", gpus=2)
    assert parse_devices("cpu,cpu", gpus=0) == ["", ""] and parse_devices("1,0", gpus=2) == ["1", "0"]


def test_run_progress_lines_count_epochs_over_phases_with_an_eta():
    from ivus_tf.grid.progress import RunProgress

    lines = []
    progress = RunProgress("[1/4] r", [("wall_lumen", 3), ("calcium", 2)], lines.append, interval_s=0)

    class Model:
        name = "unet_res_calcium"

    progress.set_model(Model())
    progress.on_train_begin()
    for epoch in range(2):
        progress.on_epoch_begin(epoch)
        progress.on_epoch_end(epoch)
    assert [line.split(",")[0] for line in lines] == ["[1/4] r: epoch 4/5 (phase calcium)",
                                                      "[1/4] r: epoch 5/5 (phase calcium)"]
    assert lines[0].endswith("ETA 0:00:00") and ", elapsed 0:00:00, " in lines[0]
    quiet = []
    progress = RunProgress("t", [("calcium", 10)], quiet.append, interval_s=3600)
    progress.set_model(Model())
    progress.on_train_begin()
    for epoch in range(10):
        progress.on_epoch_begin(epoch)
        progress.on_epoch_end(epoch)
    assert [line.split(",")[0] for line in quiet] == ["t: epoch 1/10 (phase calcium)", "t: epoch 10/10 (phase calcium)"]


@pytest.mark.slow
def test_a_grid_prints_progress_records_settings_and_says_when_interrupted(tmp_path, records):
    import keras

    from ivus_tf.grid.runner import run_grid

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    path = write_grid(tmp_path, records, ONE_RUN)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_grid(path, tmp_path / "G", log=lines.append, extra_callbacks=[Interrupt()], progress_interval_s=0)
    assert lines[-1].startswith("grid: interrupted while training unet_res-calcium-r0-f0; 0 of 1 runs recorded")
    assert any(line.startswith("[1/1] unet_res-calcium-r0-f0: epoch 1/2 (phase calcium), elapsed ") for line in lines)
    lines.clear()
    run_grid(path, tmp_path / "G", log=lines.append, progress_interval_s=0)
    assert any(line.startswith("[1/1] unet_res-calcium-r0-f0: epoch 2/2 (phase calcium)") for line in lines), lines
    record = json.loads((tmp_path / "G" / "results.jsonl").read_text())
    assert record["settings"]["epochs"] == 2 and len(record["settings"]["records_fingerprint"]) == 64
    assert "data" not in record["settings"] and "out" not in record["settings"]
