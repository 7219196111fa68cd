"""`predict --report` and `--dicom-seg` end to end on synthetic pullbacks (fake model), the refusal without
geometry, the L-mode accumulator, and one run on a real export in a fresh process (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivus_tf.core.errors import run_cli
from ivus_tf.predict import main, run_predict
from ivus_tf.pullback.calcium_score import ITEMS
from ivus_tf.pullback.lmode import LModeAccumulator
from predict_helpers import FakeModel, calcium_pullback, write_dicom, write_image_folder
from tfrecords_builder.manifest import write_manifest

ROOT = Path(__file__).resolve().parents[1]
SPACING = 0.04
# 0.5 mm/s at 2 Hz: 0.25 mm per frame. Case A: 24 frames (6 mm) of 300 degrees; case B: 16 frames (4 mm).
SPEED, RATE = 0.5, 2.0


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def manifest_of_two_pullbacks(folder: Path) -> Path:
    rows = []
    (folder / "img").mkdir(parents=True)
    for case, frames in (("A", 24), ("B", 16)):
        images, _, _ = calcium_pullback(frames + 8, [(4, 4 + frames - 1, 0, 300)])
        for i, image in enumerate(images):
            cv2.imwrite(str(folder / f"img/{case}{i:02d}.png"), image)
            rows.append({"case_id": case, "frame_id": f"{i:02d}", "image": f"img/{case}{i:02d}.png",
                         "pixel_spacing_mm": SPACING})
    return write_manifest(folder / "manifest.csv", rows)


@pytest.fixture(scope="module")
def two_pullbacks_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    summary = run_predict("unused", manifest_of_two_pullbacks(folder), folder / "out", model=FakeModel(),
                          pullback_speed_mm_s=SPEED, frame_rate_hz=RATE, report=True, overlays=False,
                          show_summary=False)
    return folder / "out", summary


def test_300_degrees_over_6_mm_scores_its_point_over_4_mm_does_not(two_pullbacks_report):
    out, summary = two_pullbacks_report
    report = json.loads((out / "report.json").read_text())
    by_case = {entry["case_id"]: entry for entry in report["pullbacks"]}
    (a,), (b,) = by_case["A"]["lesions"], by_case["B"]["lesions"]
    assert (a["start_mm"], a["end_mm"], a["length_mm"]) == pytest.approx((1.0, 7.0, 6.0))
    assert b["length_mm"] == pytest.approx(4.0)
    assert a["max_superficial_calcium_arc_deg"] == pytest.approx(300, abs=4)
    first = ITEMS[0]
    assert a["calcium_score"]["items"][first]["status"] == "met"
    assert a["calcium_score"]["items"][first]["value"] == pytest.approx(6.0)
    assert b["calcium_score"]["items"][first]["status"] == "not met"
    for lesion, points in ((a, 1), (b, 0)):
        score = lesion["calcium_score"]
        assert score["items"]["calcified_nodule"]["status"] == "not assessed"
        assert score["score_text"] == f"{points} of 3 assessable items"
        assert score["items"][ITEMS[3]]["status"] == "not met"  # EEM 4 mm across
        assert lesion["vessel_diameter_at_max_arc_mm"] == pytest.approx(4.0, abs=0.1)
    geometry = by_case["A"]["geometry"]
    assert (geometry["pullback_speed_source"], geometry["frame_rate_source"]) == ("--pullback-speed-mm-s",
                                                                                   "--frame-rate-hz")
    assert geometry["frame_interval_mm"] == pytest.approx(0.25) and geometry["pullback_length_mm"] == pytest.approx(8)
    assert report["package_version"] and report["settings"]["lesion_gap_mm"] == 1.0
    assert report["pixel_spacing_source"] == "manifest pixel_spacing_mm"
    assert sorted(by_case["A"]["figures"]) == ["frames", "lmode", "profiles"]
    assert summary["report"]["lesions"]["A"][0]["calcium_score"] == "1 of 3 assessable items"
    assert (out / "report.html").stat().st_size > 50_000
    assert sorted(p.name for p in (out / "report_figures").iterdir())[:3] == ["A_frames.png", "A_lmode.png",
                                                                              "A_profiles.png"]


def test_per_frame_csv_has_position_superficial_arc_and_its_geometry_source(two_pullbacks_report):
    out, _ = two_pullbacks_report
    rows = [row for row in read_csv(out / "measurements.csv") if row["case_id"] == "A"]
    assert [float(row["position_mm"]) for row in rows[:3]] == [0.0, 0.25, 0.5]
    assert rows[0]["superficial_calcium_arc_deg"] == "0.00" and float(rows[10]["superficial_calcium_arc_deg"]) > 296
    assert float(rows[10]["vessel_diameter_mm"]) == pytest.approx(4.0, abs=0.1)
    assert float(rows[10]["lumen_diameter_mm"]) == pytest.approx(2.0, abs=0.1)
    assert "--pullback-speed-mm-s" in rows[0]["geometry_source"] and "--frame-rate-hz" in rows[0]["geometry_source"]


def test_dicom_report_geometry_from_the_file_and_segmentation_round_trip(tmp_path):
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    images, calcium, labels = calcium_pullback(30, [(5, 26, 20, 330)], size=96, lumen_r=18, vessel_r=40,
                                               calcium_r=(20, 26))
    uids = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(), "PatientID": "P1",
            "IVUSAcquisition": "MOTOR_PULLBACK", "IVUSPullbackRate": 0.5}
    dicom = write_dicom(tmp_path / "run9.dcm", np.stack(images), pixel_spacing_mm=SPACING, frame_time_ms=500,
                        extra=uids)
    summary = run_predict("unused", dicom, tmp_path / "out", model=FakeModel(), report=True, dicom_seg=True,
                          show_summary=False)
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    geometry = report["pullbacks"][0]["geometry"]
    assert (geometry["pullback_speed_source"], geometry["frame_rate_source"]) == ("DICOM IVUSPullbackRate",
                                                                                   "DICOM FrameTime")
    (lesion,) = report["pullbacks"][0]["lesions"]
    assert lesion["length_mm"] == pytest.approx(22 * 0.25) and lesion["first_frame_id"] == "0005"
    assert lesion["calcium_score"]["items"][ITEMS[0]]["status"] == "met"  # 310 degrees over 5.5 mm
    assert lesion["calcium_score"]["items"][ITEMS[3]]["status"] == "met"  # EEM 3.2 mm across
    assert "DICOM IVUSPullbackRate" in read_csv(out / "measurements.csv")[0]["geometry_source"]
    assert summary["dicom_seg"]["path"] == "segmentation.dcm" and not (out / ".segmentation-scratch").exists()

    source = pydicom.dcmread(dicom, stop_before_pixels=True)
    raw = pydicom.dcmread(out / "segmentation.dcm")
    assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and raw.Modality == "SEG"
    assert (raw.StudyInstanceUID, raw.PatientID) == (source.StudyInstanceUID, "P1")
    assert raw.SeriesInstanceUID != source.SeriesInstanceUID
    references = [(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
                   int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber),
                   int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber))
                  for item in raw.PerFrameFunctionalGroupsSequence]
    assert {uid for uid, _, _ in references} == {source.SOPInstanceUID}
    assert sorted(frame for _, frame, segment in references if segment == 1) == list(range(6, 28))
    assert sorted(frame for _, frame, segment in references if segment == 3) == list(range(1, 31))
    seg = hd.seg.segread(out / "segmentation.dcm")
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["Calcium", "Lumen", "Vessel (inside the EEM)"]
    pixels = seg.get_pixels_by_source_frame(source.SOPInstanceUID, source_frame_numbers=list(range(1, 31)),
                                            segment_numbers=[1, 2, 3], assert_missing_frames_are_empty=True)
    for i in range(30):
        predicted_calcium = cv2.imread(str(out / "masks" / f"{i:04d}_calcium.png"), cv2.IMREAD_UNCHANGED) > 0
        predicted_labels = cv2.imread(str(out / "masks" / f"{i:04d}_wall_lumen.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(pixels[i, ..., 0] > 0, predicted_calcium)
        np.testing.assert_array_equal(pixels[i, ..., 1] > 0, predicted_labels == 1)
        np.testing.assert_array_equal(pixels[i, ..., 2] > 0, predicted_labels > 0)
        np.testing.assert_array_equal(predicted_calcium, calcium[i])


# --------------------------------------------------------------------------------------------------- refusals

def cli(argv, capsys):
    status = run_cli(main, [str(a) for a in argv])
    return status, capsys.readouterr().err.strip().splitlines()


def test_report_without_geometry_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    """Refused before the model is loaded: the model folder does not even exist."""
    folder = write_image_folder(tmp_path / "pb", calcium_pullback(3)[0])
    base = ["--model", tmp_path / "no_model", "--input", folder, "--out", tmp_path / "out", "--pixel-spacing-mm",
            SPACING, "--report"]
    status, err = cli(base, capsys)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and "--report" in err[0]
    assert "--pullback-speed-mm-s" in err[0] and "--frame-rate-hz" in err[0]
    status, err = cli(base + ["--frame-rate-hz", "30"], capsys)
    assert status == 2 and len(err) == 1 and "--pullback-speed-mm-s" in err[0] and "--frame-rate-hz" not in err[0]
    status, err = cli(base[:-1] + ["--dicom-seg"], capsys)
    assert status == 2 and len(err) == 1 and "--dicom-seg needs a DICOM input" in err[0]
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_report_flags_reach_the_report(tmp_path):
    from ivus_tf.predict import build_parser
    from ivus_tf.pullback.assemble import ReportSettings

    args = build_parser().parse_args(["--model", "m", "--input", "i", "--out", "o", "--report", "--lesion-gap-mm",
                                      "0.5", "--lmode-angle-deg", "45", "--superficial-depth-mm", "0.3"])
    assert (args.report, args.lesion_gap_mm, args.lmode_angle_deg, args.superficial_depth_mm) == (True, 0.5, 45, 0.3)
    images, _, _ = calcium_pullback(20, [(2, 5, 0, 90), (8, 12, 0, 90)])  # 2 frames (0.5 mm) apart
    folder = write_image_folder(tmp_path / "pb", images)
    for gap_mm, lesions in ((0.25, 2), (0.5, 1)):
        run_predict("unused", folder, tmp_path / "out", pixel_spacing_mm=SPACING, model=FakeModel(),
                    pullback_speed_mm_s=0.5, frame_rate_hz=2, report=True, overlays=False, show_summary=False,
                    overwrite=True, report_settings=ReportSettings(lesion_gap_mm=gap_mm, lmode_angle_deg=45))
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert len(report["pullbacks"][0]["lesions"]) == lesions
        assert report["pullbacks"][0]["lmode"]["requested_angle_deg"] == 45


# ---------------------------------------------------------------------------------------------------- L-mode

def test_lmode_keeps_one_line_per_angle_and_cuts_through_the_centre():
    image = (np.arange(101 * 101) % 251).astype(np.uint8).reshape(101, 101)
    calcium = np.zeros((101, 101), np.uint8)
    calcium[:, 50] = 1  # a vertical line: the 90-degree cut crosses the most calcium
    acc = LModeAccumulator((101, 101), 0.0, samples=101)
    for _ in range(3):
        acc.add(image, calcium, np.ones((101, 101), np.uint8))
    gray, code = acc.cut(0.0)
    np.testing.assert_array_equal(gray[:, 0], image[50, ::-1])  # up: 3 o'clock
    np.testing.assert_array_equal(acc.cut(90.0)[0][:, 1], image[:, 50])  # up: 12 o'clock
    assert acc.max_calcium_angle_deg() == 90.0
    assert gray.shape == (101, 3) and set(np.unique(code)) == {1, 5}
    big = LModeAccumulator((500, 500), 33.0)
    big.add(np.zeros((500, 500), np.uint8), None, None)
    kept = big.gray[0].nbytes + big.codes[0].nbytes
    assert 33.0 in big.angles_deg and kept < 500 * 500 / 20  # a frame's worth of lines is < 5% of the frame


# ------------------------------------------------------------------------------------------ real export, slow

@pytest.mark.slow
def test_real_export_report_in_a_fresh_process(tmp_path):
    """A tiny exported U-Net on phantom frames, `python -m ivus_tf.predict --report` as a user runs it."""
    import dataclasses

    from ivus_tf.export import export_savedmodel
    from ivus_tf.models import build_model
    from tfrecords_builder.phantom import PRESETS, render_case_frames

    model = build_model("unet_res", ("calcium", "wall_lumen"), input_shape=(64, 64, 1), width=0.0625)
    export_savedmodel(model, tmp_path / "saved_models" / "tiny")
    config = dataclasses.replace(PRESETS["default"], image_size=96, pixel_spacing_mm=0.1, a_lines=256)
    folder = write_image_folder(tmp_path / "pb", [image for _, _, image, _, _ in render_case_frames(config, 3, 0, 6)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "ivus_tf.predict", "--model", str(tmp_path / "saved_models" / "tiny"), "--input",
         str(folder), "--out", str(tmp_path / "out"), "--pixel-spacing-mm", "0.1", "--pullback-speed-mm-s", "0.5",
         "--frame-rate-hz", "1", "--report", "--engine", "tensorflow"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pullbacks"][0]["summary"]["frames"] == 6
    assert report["pullbacks"][0]["geometry"]["pullback_length_mm"] == pytest.approx(3.0)
    assert "<img" in (tmp_path / "out" / "report.html").read_text()
