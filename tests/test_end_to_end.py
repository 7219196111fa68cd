"""The whole path a user takes: train a run -> export it -> predict a pullback from the export."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from conftest import synthetic_frame
from ivus_tf.training.config import TrainConfig
from ivus_tf.training.run import run_training

pytestmark = pytest.mark.slow  # trains, exports and predicts: the whole path, ~15 s


def test_train_export_predict(tmp_path):
    from ivus_tf.export import export_savedmodel, load_exported
    from ivus_tf.postprocess import PRESETS, postprocess_frame
    from ivus_tf.predict import run_predict
    from tfrecords_builder.writer import write_records

    frames = {f"case{i}": [synthetic_frame(f"case{i}", f"{j:02d}", (72, 80), ("calcium", "wall_lumen"),
                                           seed=10 * i + j, pixel_spacing_mm=0.03) for j in range(3)]
              for i in range(5)}
    write_records(frames, tmp_path / "records")
    config = TrainConfig(scheme="multitask", arch="unet_res", width=0.0625, image_size=64, batch_size=4, epochs=1,
                         steps_per_epoch=2, data=str(tmp_path / "records"), out=str(tmp_path / "run"), repeats=1,
                         folds=2, run_eagerly=True)
    result = run_training(config, log=lambda text: None)
    run_dir = result["run_dir"]
    assert (run_dir / "model.keras").is_file() and (run_dir / "config.yaml").is_file()

    export_dir = export_savedmodel(run_dir, tmp_path / "saved_models" / "calcium")
    exported = load_exported(tmp_path / "saved_models" / "calcium")
    assert set(exported.tasks) == {"calcium", "wall_lumen"}

    pullback = tmp_path / "pullback"
    pullback.mkdir()
    for frame in frames["case0"]:
        cv2.imwrite(str(pullback / f"{frame['frame_id']}.png"), frame["image"])
    summary = run_predict(export_dir, pullback, tmp_path / "out", pixel_spacing_mm=0.03, show_summary=False)
    rows = list(csv.DictReader(open(tmp_path / "out" / "measurements.csv")))
    assert [r["frame_id"] for r in rows] == ["00", "01", "02"]
    masks = exported.predict(np.stack([f["image"] for f in frames["case0"]]))
    # predict cleans the masks by default (ivus_tf.postprocess) before writing and measuring them
    calcium, _ = postprocess_frame(masks["calcium_mask"][0], masks["wall_lumen_labels"][0], 0.03, PRESETS["default"])
    written = cv2.imread(str(tmp_path / "out" / "masks" / "00_calcium.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(written > 0, calcium > 0)
    area = float(rows[0]["calcium_area_mm2"])
    assert abs(area - calcium.sum() * 0.03**2) < 1e-3
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["engine"] == summary["engine"]
