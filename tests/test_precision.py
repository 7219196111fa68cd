"""Reduced precision: bf16 (oneDNN) and int8 (ONNX Runtime) against fp32 on a tiny model, calibration on training
cases only, the export's Dice check, and predict refusing a precision the export measured beyond the limit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_frame
from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.export import precision as P
from predict_helpers import geometry_frame, tiny_export, write_image_folder

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

SENTINEL = 77  # every pixel of every TEST frame: a calibration frame holding it came from a test case
CASES = [f"case{i}" for i in range(5)]


def frames_for(case_id: str, test: bool) -> list[dict]:
    frames = [synthetic_frame(case_id, str(k), size=(48, 56), seed=10 * CASES.index(case_id) + k) for k in range(3)]
    if test:
        for frame in frames:
            frame["image"] = np.full_like(frame["image"], SENTINEL)
    return frames


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A records folder of 5 cases (the test case's frames all SENTINEL) and its splits, as a run's config."""
    from ivus_tf.splits import make_splits, write_splits
    from tfrecords_builder.writer import write_records

    root = tmp_path_factory.mktemp("run")
    case_tasks = {case: ["calcium", "wall_lumen"] for case in CASES}
    splits = make_splits(case_tasks, n_test_cases=1, repeats=1, folds=2, seed=0)
    test = set(splits["test_cases"])
    write_records({case: frames_for(case, case in test) for case in CASES}, root / "records")
    write_splits(root / "splits.json", splits)
    return {"data": str(root / "records"), "splits": str(root / "splits.json"), "repeat": 0, "fold": 0,
            "postprocess": "default", "test_cases": sorted(test)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run):
    """A tiny two-task U-Net exported with model.onnx and model_int8.onnx (bf16 too where the CPU has it), the
    calibration frames it was fed recorded."""
    from ivus_tf.export import quantize
    from ivus_tf.export.reduced import add_precisions, run_data

    fed = []
    original = quantize.TrainingFrames.get_next

    def spy(self):
        item = original(self)
        if item is not None:
            fed.append(item["frames"].copy())
        return item

    precisions = ("fp32", "int8") + (() if P.bf16_missing() else ("bf16",))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize.TrainingFrames, "get_next", spy)
        version = tiny_export(tmp_path_factory.mktemp("export") / "tiny", after=lambda src, folder, info: (
            add_precisions(src, folder, info, precisions, run_data(run), calibration_frames=5, log=lambda _: None)))
    return version, fed


def sample_frames() -> np.ndarray:
    return np.stack([geometry_frame(size=(70, 64), center=(35, 32), calcium=(14, 22, 40 * i, 40 * i + 150))[0]
                     for i in range(4)])


# ---------------------------------------------------------------------------------------------------- bf16

def test_cpu_flags_decide_bf16(tmp_path):
    plain, bf16 = tmp_path / "plain", tmp_path / "bf16"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    bf16.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert P.cpu_flags(bf16) >= {"avx512_bf16", "avx512f"}
    assert P.bf16_missing(bf16) is None
    assert "neither avx512_bf16 nor amx_bf16" in P.bf16_missing(plain)
    assert "cannot read" in P.bf16_missing(tmp_path / "absent")


@pytest.mark.slow
def test_bf16_refused_with_one_line_where_the_cpu_lacks_it(exported, tmp_path, monkeypatch, capsys):
    from ivus_tf.predict import main

    fake = tmp_path / "cpuinfo"
    fake.write_text("flags\t\t: fpu sse2 avx2\n")
    monkeypatch.setattr(P, "CPUINFO", fake)
    folder = write_image_folder(tmp_path / "pb", list(sample_frames()))
    status = run_cli(main, ["--model", str(exported[0]), "--input", str(folder), "--out", str(tmp_path / "out"),
                            "--pixel-spacing-mm", "0.02", "--precision", "bf16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "neither avx512_bf16 nor amx_bf16" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(P.bf16_missing() is not None, reason=f"bf16 needs AVX512-BF16/AMX: {P.bf16_missing()}")
def test_bf16_probabilities_close_to_fp32_and_fp32_restored(exported):
    from ivus_tf.export import load_exported

    frames = sample_frames()
    full = load_exported(exported[0], engine="tensorflow")
    half = load_exported(exported[0], precision="bf16")
    assert half.engine == "tensorflow" and half.precision == "bf16"
    expected, got = full.predict(frames), half.predict(frames)
    # bfloat16 arithmetic did run (8-bit mantissa) and stayed close; the tiny model's head is scaled up to decisive
    # logits (tiny_export), which magnifies rounding, hence a loose maximum (0.097 seen) and a tight mean (0.005)
    for name in ("calcium_probability", "wall_lumen_probability"):
        difference = np.abs(got[name] - expected[name])
        assert 0 < difference.max() < 0.2 and difference.mean() < 0.01
    assert (got["calcium_mask"] == expected["calcium_mask"]).mean() > 0.98
    assert (got["wall_lumen_labels"] == expected["wall_lumen_labels"]).mean() > 0.98
    again = full.predict(frames)  # the process-wide option was put back: fp32 is fp32 again
    np.testing.assert_array_equal(again["calcium_probability"], expected["calcium_probability"])


# ---------------------------------------------------------------------------------------------------- int8

@pytest.mark.slow
def test_int8_export_loads_in_onnxruntime_and_agrees_with_fp32(exported):
    import onnx

    from ivus_tf.export import load_exported, read_info

    version, _ = exported
    assert (version / P.INT8_ONNX_NAME).is_file()
    graph = onnx.load(str(version / P.INT8_ONNX_NAME)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    full = load_exported(version, engine="onnxruntime")
    quantized = load_exported(version, precision="int8")
    assert quantized.engine == "onnxruntime" and quantized.precision == "int8"
    frames = sample_frames()
    expected, got = full.predict(frames), quantized.predict(frames)
    assert sorted(got) == sorted(expected) and got["calcium_mask"].shape == frames.shape
    assert np.abs(got["calcium_probability"] - expected["calcium_probability"]).max() > 0  # it is quantized
    assert (got["calcium_mask"] == expected["calcium_mask"]).mean() > 0.95
    assert (got["wall_lumen_labels"] == expected["wall_lumen_labels"]).mean() > 0.95
    record = read_info(version)["precisions"]["int8"]
    assert record["file"] == P.INT8_ONNX_NAME and record["calibration"]["frames"] == 5
    check = record["check"]
    assert check["engine"] == "onnxruntime" and check["frames_scored"]["calcium"] == 3
    assert set(check["dice"]) >= {"calcium_dice_cleaned", "calcium_dice_raw", "lumen_dice_raw", "vessel_dice_raw"}
    entry = check["dice"]["calcium_dice_cleaned"]
    assert entry["change_points"] == pytest.approx(100 * (entry["int8"] - entry["fp32"]))
    assert record["offered"] == P.offered([check["dice"][k]["change_points"]
                                           for k in ("calcium_dice_cleaned", "calcium_dice_raw")])
    per_frame = json.loads((version / "assets.extra" / "precision_check.json").read_text())
    assert len(per_frame["int8"]["calcium"]) == 3 and {"dice_fp32", "dice_int8"} <= set(per_frame["int8"]["calcium"][0])


@pytest.mark.slow
def test_calibration_reads_only_training_cases(exported, run):
    from ivus_tf.export import read_info
    from ivus_tf.export.quantize import TrainingFrames
    from ivus_tf.export.reduced import run_data

    version, fed = exported
    data = run_data(run)
    assert set(data.test_cases) == set(run["test_cases"]) and not set(data.train_cases) & set(data.test_cases)
    assert len(fed) >= 5 and all(frame.dtype == np.uint8 and frame.shape == (1, 48, 56) for frame in fed)
    assert not any(np.all(frame == SENTINEL) for frame in fed)  # no test frame reached the calibration
    calibration = read_info(version)["precisions"]["int8"]["calibration"]
    assert set(calibration["cases"]) == set(data.train_cases)
    # the sentinel is detectable: calibrating on the test case would have fed it
    leaked = TrainingFrames(run["data"], run["test_cases"], 2)
    assert all(np.all(image == SENTINEL) for image in leaked.images)


def test_int8_needs_training_data_and_onnx():
    from ivus_tf.export.reduced import parse_precisions

    with pytest.raises(InputError, match="needs --format onnx"):
        parse_precisions("fp32,int8", "savedmodel")
    with pytest.raises(InputError, match="needs --format tensorrt"):
        parse_precisions("fp16", "onnx")
    with pytest.raises(InputError, match="choose from fp32, bf16, int8, fp16"):
        parse_precisions("int4", "onnx")
    assert parse_precisions("fp32, int8,int8", "onnx") == ("fp32", "int8")


# -------------------------------------------------------------------------------------------------- predict

def with_record(exported_dir: Path, tmp_path: Path, precision: str, record: dict | None) -> Path:
    """A copy of the export whose record says `record` about `precision`."""
    copy = tmp_path / "model" / "1"
    shutil.copytree(exported_dir, copy)
    path = copy / "assets.extra" / "ivus_tf_export.json"
    info = json.loads(path.read_text())
    info["precisions"][precision] = {**info["precisions"].get(precision, {}), **(record or {})}
    path.write_text(json.dumps(info))
    return copy


@pytest.mark.slow
def test_predict_refuses_a_precision_over_the_dice_limit(exported, tmp_path, capsys):
    from ivus_tf.predict import main

    model = with_record(exported[0], tmp_path, "int8", {"offered": False, "check": {
        "calcium_dice_change_points": -0.8, "limit_points": 0.5}})
    folder = write_image_folder(tmp_path / "pb", list(sample_frames()))
    status = run_cli(main, ["--model", str(model), "--input", str(folder), "--out", str(tmp_path / "out"),
                            "--pixel-spacing-mm", "0.02", "--precision", "int8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0] == (f"error: {model}: int8 is not offered for this model: its calcium Dice on the test cases "
                      "changed by -0.80 points vs fp32 (limit 0.5); use fp32")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_warns_once_for_an_unmeasured_precision_and_runs_it(exported, tmp_path, capsys):
    from ivus_tf.predict import main

    model = with_record(exported[0], tmp_path, "int8", {"offered": None, "check": None})
    folder = write_image_folder(tmp_path / "pb", list(sample_frames()))
    status = run_cli(main, ["--model", str(model), "--input", str(folder), "--out", str(tmp_path / "out"),
                            "--pixel-spacing-mm", "0.02", "--precision", "int8", "--batch-size", "2"])
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert status == 0 and len(warnings) == 1 and "int8 was not checked against fp32" in warnings[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["precision"] == "int8" and summary["engine"] == "onnxruntime"
    assert "engine: onnxruntime (int8)" in captured.out


@pytest.mark.slow
def test_precision_engine_clash_is_one_line(exported):
    from ivus_tf.export import load_exported

    with pytest.raises(InputError, match="int8 runs on onnxruntime, not on --engine tensorflow"):
        load_exported(exported[0], engine="tensorflow", precision="int8")
    with pytest.raises(InputError, match="fp16 runs as TensorRT engines"):
        load_exported(exported[0], precision="fp16")
