"""RunFolder: the layout of a training run, its config through TrainConfig, and clear errors for broken folders."""

from __future__ import annotations

import json

import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.run_folder import RunFolder, prediction_path
from ivus_tf.training.config import TrainConfig


def test_layout(tmp_path):
    run = RunFolder(str(tmp_path))
    assert run.config_path == tmp_path / "config.yaml" and run.model_path == tmp_path / "model.keras"
    assert run.metrics_path == tmp_path / "metrics.json" and run.done_path == tmp_path / "done.json"
    assert run.tb_phase_dir("calcium") == tmp_path / "tb" / "calcium"
    assert run.predictions_dir == tmp_path / "predictions"
    phase = run.phase("wall_lumen")
    assert phase.path == tmp_path / "checkpoints" / "wall_lumen"
    assert (phase.state.name, phase.last_weights.name, phase.best_model.name) == ("state.json", "last.weights.h5",
                                                                                    "best.keras")
    assert prediction_path(run.predictions_dir, "c1", "0007", "wall_lumen") == \
        tmp_path / "predictions" / "c1" / "0007_wall_lumen.png"
    with pytest.raises(InputError, match="unknown task 'lumen'"):
        prediction_path(tmp_path, "c1", "0007", "lumen")


def test_config_loads_through_train_config_with_paths_relative_to_the_folder(tmp_path):
    run = RunFolder(tmp_path / "run")
    with pytest.raises(InputError, match=r"run: no config.yaml; not a training run folder"):
        run.load_config()
    run.path.mkdir()
    run.config_path.write_text("arch: unet_res\nwidth: 0.0625\nimage_size: 64\ndata: ../records\n")
    config = run.load_config()
    assert isinstance(config, TrainConfig) and (config.arch, config.width, config.scheme) == ("unet_res", 0.0625,
                                                                                             "calcium")
    assert run.records_dir().resolve() == (tmp_path / "records").resolve()
    with pytest.raises(InputError, match="names no splits file"):
        run.splits_path()
    run.config_path.write_text("arch: unet_res\nimage_size: 100\n")
    with pytest.raises(InputError, match="image_size 100 must be a multiple of 8"):
        run.load_config()


def test_metrics_and_completion(tmp_path):
    run = RunFolder(tmp_path)
    assert not run.is_finished()
    with pytest.raises(InputError, match="metrics.json: unreadable metrics"):
        run.read_metrics()
    run.metrics_path.write_text(json.dumps({"calcium": {}}))
    run.done_path.write_text("[1]")
    assert run.read_metrics() == {"calcium": {}} and run.is_finished()
    with pytest.raises(InputError, match="done.json: expected a JSON object, got list"):
        run.read_done()
