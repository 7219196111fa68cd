"""Tests of the predict command: outputs and measurements end to end (fake model), bad input, streaming, and one
run on a real export in a fresh process."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.measurements import frame_measurements
from ivus_tf.overlay import COLOURS, render_overlay
from ivus_tf.predict import CSV_COLUMNS, main, predict_frames, run_predict
from ivus_tf.pullback_io import Frame, Pullback
from predict_helpers import FakeModel, geometry_frame, write_dicom, write_image_folder
from tfrecords_builder.manifest import write_manifest

ROOT = Path(__file__).resolve().parents[1]
SECTORS = [None, (18, 28, 0, 90), (18, 28, 30, 200), (18, 28, 100, 40), (18, 28, 100, 40)]  # 0, 90, 170, 300, 300


def known_frames():
    return [geometry_frame(calcium=sector) for sector in SECTORS]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def leftovers(parent: Path, name: str):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


# ------------------------------------------------------------------------------------------------ end to end

def test_folder_end_to_end_known_geometry(tmp_path, capsys):
    frames = known_frames()
    folder = write_image_folder(tmp_path / "pb7", [image for image, _, _ in frames])
    model = FakeModel()
    summary = run_predict("unused", folder, tmp_path / "out", pixel_spacing_mm=0.02, batch_size=2, model=model,
                          pullback_speed_mm_s=0.5, frame_rate_hz=25)
    assert model.batch_shapes == [(2, 96, 96), (2, 96, 96), (1, 96, 96)]
    out = tmp_path / "out"
    rows = read_csv(out / "measurements.csv")
    assert tuple(rows[0]) == CSV_COLUMNS and [r["frame_id"] for r in rows] == [f"frame{i}" for i in range(5)]
    for row, (_, calcium, labels), arc in zip(rows, frames, (0, 90, 170, 300, 300)):
        expected = frame_measurements(calcium, labels, 0.02)
        assert float(row["calcium_arc_deg"]) == pytest.approx(arc, abs=2 * math.degrees(math.atan(0.71 / 18)))
        assert float(row["calcium_area_mm2"]) == pytest.approx(expected["calcium_area_mm2"], abs=1e-4)
        assert float(row["lumen_area_mm2"]) == pytest.approx(math.pi * (14 * 0.02) ** 2, rel=0.03)
        assert float(row["vessel_area_mm2"]) == pytest.approx(math.pi * (34 * 0.02) ** 2, rel=0.03)
        assert float(row["plaque_burden_percent"]) == pytest.approx(100 * (1 - (14 / 34) ** 2), abs=1)
        assert row["pixel_spacing_mm"] == "0.02" and row["case_id"] == "pb7" and row["arc_center"] == "lumen"
        name = row["frame_id"]
        np.testing.assert_array_equal(cv2.imread(str(out / "masks" / f"{name}_calcium.png"), cv2.IMREAD_UNCHANGED),
                                      calcium.astype(np.uint8) * 255)
        np.testing.assert_array_equal(cv2.imread(str(out / "masks" / f"{name}_wall_lumen.png"),
                                                 cv2.IMREAD_UNCHANGED), labels)
        overlay = cv2.cvtColor(cv2.imread(str(out / "overlays" / f"{name}.png")), cv2.COLOR_BGR2RGB)
        assert overlay.shape == (96, 96, 3) and np.all(overlay == COLOURS["vessel"], axis=2).any()
        assert np.all(overlay == COLOURS["calcium"], axis=2).any() == bool(calcium.any())  # red on disk too
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    pullback = saved["pullbacks"]["pb7"]
    assert (pullback["frames"], pullback["frames_with_calcium"], pullback["frames_with_arc_over_180"],
            pullback["frames_with_arc_over_270"]) == (5, 4, 2, 2)
    assert pullback["frame_interval_mm"] == pytest.approx(0.02)
    assert pullback["calcium_length_mm"] == pytest.approx(0.08)
    assert pullback["longest_arc_over_270_mm"] == pytest.approx(0.04)
    assert saved["engine"] == "tensorflow" and saved["input_kind"] == "folder" and saved["frames"] == 5
    stdout = capsys.readouterr().out
    assert "engine: tensorflow" in stdout and "pb7: 5 frames, 4 with calcium" in stdout
    assert "calcium length 0.08 mm" in stdout


def test_dicom_and_manifest_inputs(tmp_path):
    frames = known_frames()
    stack = np.stack([image for image, _, _ in frames])
    dicom = write_dicom(tmp_path / "run3.dcm", stack, region_delta_cm=(0.002, 0.002), frame_time_ms=40)
    summary = run_predict("unused", dicom, tmp_path / "out_dcm", model=FakeModel(), pullback_speed_mm_s=0.5,
                          overlays=False)
    assert summary["pixel_spacing_mm"] == [pytest.approx(0.02)] and summary["frame_rate_source"] == "DICOM FrameTime"
    assert summary["pullbacks"]["run3"]["frame_interval_mm"] == pytest.approx(0.5 / 25)
    assert not (tmp_path / "out_dcm" / "overlays").exists()
    assert (tmp_path / "out_dcm" / "masks" / "0004_calcium.png").is_file()
    rows = []
    (tmp_path / "img").mkdir()
    for i, (image, _, _) in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"img/{i}.png"), image)
        rows.append({"case_id": "A" if i < 3 else "B", "frame_id": str(i), "image": f"img/{i}.png",
                     "pixel_spacing_mm": 0.02 if i < 3 else 0.04})
    summary = run_predict("unused", write_manifest(tmp_path / "m.csv", rows), tmp_path / "out_m", model=FakeModel())
    assert sorted(summary["pullbacks"]) == ["A", "B"] and summary["pullbacks"]["B"]["frames"] == 2
    measured = read_csv(tmp_path / "out_m" / "measurements.csv")
    assert [r["pixel_spacing_mm"] for r in measured] == ["0.02"] * 3 + ["0.04"] * 2
    # same geometry at twice the spacing: four times the area
    assert float(measured[4]["vessel_area_mm2"]) == pytest.approx(4 * float(measured[0]["vessel_area_mm2"]), rel=1e-3)
    assert (tmp_path / "out_m" / "overlays" / "B_4.png").is_file()


def test_calcium_only_model(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "pb", [image for image, _, _ in known_frames()[:2]])
    run_predict("unused", folder, tmp_path / "out", pixel_spacing_mm=0.02, model=FakeModel(tasks=("calcium",)))
    rows = read_csv(tmp_path / "out" / "measurements.csv")
    assert rows[1]["lumen_area_mm2"] == "" and rows[1]["plaque_burden_percent"] == ""
    assert rows[1]["arc_center"] == "image" and float(rows[1]["calcium_arc_deg"]) > 80
    assert not list((tmp_path / "out" / "masks").glob("*_wall_lumen.png"))
    assert capsys.readouterr().err.count("warning: ") == 1


def test_overlay_contour_colours():
    image, calcium, labels = geometry_frame()
    overlay = render_overlay(image, {"calcium": calcium, "wall_lumen": labels}, center_rc=(48, 48), text="frame0",
                             legend=True)
    for name, region in (("calcium", calcium), ("lumen", labels == 1), ("vessel", labels != 0)):
        colour = COLOURS[name]
        drawn = np.all(overlay == colour, axis=2)
        assert drawn.sum() > 20, colour
        near = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert drawn[~near].sum() == 0  # contours lie on their region's border
    assert overlay[48, 48].tolist() == [255, 255, 255]  # the arc's viewpoint


# --------------------------------------------------------------------------------------------------- bad input

def cli(argv, capsys):
    status = run_cli(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.err.strip().splitlines()


@pytest.mark.parametrize("case", ["empty_folder", "corrupt_dicom", "mixed_sizes", "missing_spacing", "not_an_export",
                                  "missing_input"])
def test_bad_input_one_line_error_exit_2_no_output(tmp_path, capsys, case):
    image = geometry_frame()[0]
    model = tmp_path / "saved_models" / "m"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"not a model")
    spacing = ["--pixel-spacing-mm", "0.02"]
    if case == "empty_folder":
        source, expected = tmp_path / "empty", "no frames in this folder"
        source.mkdir()
    elif case == "corrupt_dicom":
        source, expected = tmp_path / "broken.dcm", "broken.dcm: not a DICOM file"
        source.write_bytes(np.random.default_rng(0).bytes(4096))
        spacing = []
    elif case == "mixed_sizes":
        source = write_image_folder(tmp_path / "pb", [image, image, image[:90], image])
        expected = "frame2.png: frame is 96x90 (WxH) but frame0.png is 96x96"
    elif case == "missing_spacing":
        source, expected = write_image_folder(tmp_path / "pb", [image]), "pass --pixel-spacing-mm"
        spacing = []
    elif case == "not_an_export":
        source, expected = write_image_folder(tmp_path / "pb", [image]), "not an ivus-tf export"
    else:
        source, expected = tmp_path / "nothing_here", "input not found"
    status, err = cli(["--model", model, "--input", source, "--out", tmp_path / "out", *spacing], capsys)
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path, "out")


def test_colour_frames_converted_with_exactly_one_warning(tmp_path, capsys):
    image = geometry_frame()[0]
    folder = write_image_folder(tmp_path / "pb", [np.dstack([image] * 3)] * 4)
    run_predict("unused", folder, tmp_path / "out", pixel_spacing_mm=0.02, model=FakeModel())
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning:")]
    assert len(warnings) == 1 and "converted to gray" in warnings[0]
    assert float(read_csv(tmp_path / "out" / "measurements.csv")[0]["vessel_area_mm2"]) > 0


def test_failure_mid_pullback_leaves_nothing(tmp_path):
    image = geometry_frame()[0]
    folder = write_image_folder(tmp_path / "pb", [image] * 6)
    data = (folder / "frame4.png").read_bytes()
    (folder / "frame4.png").write_bytes(data[:-30])
    model = FakeModel()
    with pytest.raises(InputError, match=r"frame4\.png: truncated PNG"):
        run_predict("unused", folder, tmp_path / "out", pixel_spacing_mm=0.02, batch_size=2, model=model)
    assert len(model.batch_shapes) == 2  # it got going, then stopped
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path, "out")


def test_output_folder_rules(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "pb", [geometry_frame()[0]])
    out = tmp_path / "out"
    run_predict("unused", folder, out, pixel_spacing_mm=0.02, model=FakeModel())
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        run_predict("unused", folder, out, pixel_spacing_mm=0.02, model=FakeModel())
    (out / "measurements.csv").write_text("stale")
    run_predict("unused", folder, out, pixel_spacing_mm=0.02, model=FakeModel(), overwrite=True)
    assert (out / "measurements.csv").read_text() != "stale"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="not a predict output"):
        run_predict("unused", folder, other, pixel_spacing_mm=0.02, model=FakeModel(), overwrite=True)
    with pytest.raises(InputError, match="is or holds the input"):
        run_predict("unused", folder, tmp_path, pixel_spacing_mm=0.02, model=FakeModel(), overwrite=True)
    assert (other / "thesis.tex").read_text() == "keep me"


# --------------------------------------------------------------------------------------------------- streaming

@pytest.mark.parametrize("io_threads", [0, 2])
def test_pullback_is_streamed_not_held(tmp_path, monkeypatch, io_threads):
    """1000 frames through run_predict: sequentially the reader is never more than one batch ahead of the model;
    overlapped, never more than the prefetch queue, the batch being cut and the batch being predicted."""
    import ivus_tf.predict as predict_module
    from ivus_tf.predict_stream import PREFETCH_BATCHES

    counts = {"read": 0, "predicted": 0, "max_ahead": 0}
    image = np.zeros((8, 8), np.uint8)

    def frames():
        for i in range(1000):
            counts["read"] += 1
            yield Frame("pb", f"{i:04d}", f"{i:04d}", image, 0.02, f"frame {i}")

    def on_predict(batch):
        counts["max_ahead"] = max(counts["max_ahead"], counts["read"] - counts["predicted"])
        counts["predicted"] += len(batch)

    fake = Pullback("folder", tmp_path, 1000, ["pb"], 0.02, "test", _iterate=frames)
    monkeypatch.setattr(predict_module, "open_pullback", lambda *args, **kwargs: fake)
    summary = run_predict("unused", tmp_path / "in", tmp_path / "out", model=FakeModel(on_predict=on_predict),
                          batch_size=16, overlays=False, io_threads=io_threads)
    assert summary["frames"] == 1000 and counts["predicted"] == 1000
    if io_threads == 0:
        assert counts["max_ahead"] == 16
    else:
        assert 16 <= counts["max_ahead"] <= (PREFETCH_BATCHES + 2) * 16


def test_batches_cut_at_size_changes():
    small, large = np.zeros((4, 4), np.uint8), np.zeros((6, 6), np.uint8)
    frames = [Frame("c", str(i), str(i), image, 0.1, "") for i, image in enumerate([small] * 3 + [large] * 2)]
    model = FakeModel()
    results = list(predict_frames(model, frames, 2, ("calcium", "wall_lumen")))
    assert model.batch_shapes == [(2, 4, 4), (1, 4, 4), (2, 6, 6)]
    assert [frame.frame_id for frame, _ in results] == ["0", "1", "2", "3", "4"]
    assert results[4][1]["wall_lumen_labels"].shape == (6, 6)


# ------------------------------------------------------------------------------------------------- real export

@pytest.mark.slow
def test_real_export_in_a_fresh_process(tmp_path):
    """A tiny U-Net exported with ivus_tf.export, run by `python -m ivus_tf.predict --no-postprocess`: the files
    hold what `load_exported(...).predict` gives for the same frames, frames of a size unlike the model's
    included."""
    from ivus_tf.export import export_savedmodel, load_exported
    from ivus_tf.models import build_model

    model = build_model("unet_res", ("calcium", "wall_lumen"), input_shape=(64, 64, 1), width=0.0625)
    export_savedmodel(model, tmp_path / "saved_models" / "tiny")
    frames = [geometry_frame(size=(80, 72), center=(40, 36), calcium=sector)[0] for sector in SECTORS[:3]]
    folder = write_image_folder(tmp_path / "pb", frames)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "ivus_tf.predict", "--model", str(tmp_path / "saved_models" / "tiny"), "--input",
         str(folder), "--out", str(tmp_path / "out"), "--pixel-spacing-mm", "0.02", "--batch-size", "2",
         "--engine", "tensorflow", "--no-postprocess"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "engine: tensorflow" in result.stdout
    # nothing but the progress lines on stderr: no TensorFlow start-up chatter, no warnings
    assert [line for line in result.stderr.splitlines() if not line.startswith("predict: ")] == []
    expected = load_exported(tmp_path / "saved_models" / "tiny", engine="tensorflow").predict(np.stack(frames))
    for i in range(3):
        calcium = cv2.imread(str(tmp_path / "out" / "masks" / f"frame{i}_calcium.png"), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(tmp_path / "out" / "masks" / f"frame{i}_wall_lumen.png"), cv2.IMREAD_UNCHANGED)
        assert calcium.shape == (80, 72)
        np.testing.assert_array_equal(calcium, expected["calcium_mask"][i] * 255)
        np.testing.assert_array_equal(labels, expected["wall_lumen_labels"][i])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["engine"] == "tensorflow" and summary["tasks"] == ["calcium", "wall_lumen"]
    assert summary["model_info"]["model_input_size"] == [64, 64]
    assert len(read_csv(tmp_path / "out" / "measurements.csv")) == 3
