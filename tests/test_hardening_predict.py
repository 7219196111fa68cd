"""Issue 13, predict and export: DICOM spacing and timing problems, the memory guard, file-system errors, the
serving signature's rank error, garbage .keras files, TensorRT's advice. Each test failed on main before its fix."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from test_hardening_data import unwritable_parent

from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.pullback_io import Frame, Warnings, open_pullback
from predict_helpers import FakeModel, geometry_frame, write_dicom, write_image_folder

FRAMES = np.random.default_rng(0).integers(0, 256, (2, 8, 8), dtype=np.uint8)


def patched_dicom(path: Path, old: bytes, new: bytes, **options) -> Path:
    """A DICOM file written by pydicom with the bytes `old` of one value replaced by `new` (same length): how
    values pydicom refuses to write (text in a decimal string) get into a test file."""
    write_dicom(path, FRAMES, **options)
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))
    return path


# ------------------------------------------------------------------------------- 4, 5: DICOM spacing, timing

@pytest.mark.parametrize("name, options", [
    ("non_square", dict(pixel_spacing_mm=(0.02, 0.03))),
    ("zero", dict(pixel_spacing_mm=(0.0, 0.0))),
    ("region_non_square", dict(region_delta_cm=(0.002, 0.003))),
    ("region_zero", dict(region_delta_cm=(0.0, 0.0))),
    ("one_value", dict(extra={"PixelSpacing": 0.02})),
    ("tiny", dict(pixel_spacing_mm=(1e-9, 1e-9))),
])
def test_pixel_spacing_flag_overrides_any_dicom_spacing_problem(tmp_path, name, options):
    path = write_dicom(tmp_path / f"{name}.dcm", FRAMES, **options)
    with pytest.raises(InputError) as error:
        open_pullback(path)
    assert str(error.value).startswith(f"{path}: ") and "--pixel-spacing-mm" in str(error.value)
    stream = io.StringIO()
    pullback = open_pullback(path, 0.025, Warnings(stream))
    assert pullback.pixel_spacing_mm == 0.025 and pullback.spacing_source == "--pixel-spacing-mm"
    assert len(list(pullback)) == 2
    assert stream.getvalue().startswith(f"warning: {path}: ") and "using --pixel-spacing-mm 0.025" in stream.getvalue()


def test_pixel_spacing_as_text_is_one_line_and_the_flag_overrides_it(tmp_path):
    path = patched_dicom(tmp_path / "text.dcm", b"0.0123\\0.0123", b"abcdef\\ghijkl", pixel_spacing_mm=0.0123)
    with pytest.raises(InputError, match=rf"^{path}: DICOM PixelSpacing .*is not two numbers"):
        open_pullback(path)
    assert open_pullback(path, 0.02, Warnings(io.StringIO())).pixel_spacing_mm == 0.02


@pytest.mark.parametrize("frame_time", [b"1e-320", b"abcdef"])
def test_a_bad_frame_time_is_ignored_with_a_warning_and_the_flag_wins(tmp_path, frame_time):
    from ivus_tf.pullback.geometry import resolve_geometry

    path = patched_dicom(tmp_path / "t.dcm", b"33.25 ", frame_time, pixel_spacing_mm=0.02, frame_time_ms=33.25)
    stream = io.StringIO()
    pullback = open_pullback(path, None, Warnings(stream))
    assert pullback.frame_rate_hz is None
    assert "DICOM FrameTime" in stream.getvalue() and "ignored" in stream.getvalue()
    geometry = resolve_geometry(2, 0.5, 30.0, pullback.timing)
    assert geometry.frame_rate_hz == 30.0 and geometry.frame_interval_mm == pytest.approx(0.5 / 30)


def test_frame_rate_flag_outside_a_physical_range_is_refused():
    from ivus_tf.pullback.geometry import resolve_geometry

    with pytest.raises(InputError, match="--frame-rate-hz 1e\\+300 must be between"):
        resolve_geometry(2, 0.5, 1e300)


def test_ybr_labelled_one_channel_dicom_is_one_line(tmp_path):
    path = write_dicom(tmp_path / "ybr.dcm", FRAMES, pixel_spacing_mm=0.02, extra={"PhotometricInterpretation":
                                                                                   "YBR_FULL"})
    with pytest.raises(InputError, match=rf"^{path}: PhotometricInterpretation YBR_FULL needs 3 samples per pixel, "
                                         "but SamplesPerPixel is 1"):
        open_pullback(path)


def test_pixel_spacing_flag_outside_the_physical_range_is_refused(tmp_path):
    folder = write_image_folder(tmp_path / "pb", [FRAMES[0]])
    for value in (1e-50, 1e39):
        with pytest.raises(InputError, match="--pixel-spacing-mm .* must be a finite number of mm per pixel"):
            open_pullback(folder, value)


# ------------------------------------------------------------------------------------ 13: the memory guard

def frames_of(size, count):
    return [Frame("c", str(i), str(i), np.zeros(size, np.uint8), 0.02, "") for i in range(count)]


def test_predict_batch_shrinks_for_large_frames_with_one_warning():
    from ivus_tf.predict import predict_frames
    from ivus_tf.pullback.batching import frame_bytes

    model = FakeModel()
    model.info = {"model_input_size": [64, 64], "parameters": 100_000}  # a tiny export
    per_frame = frame_bytes((1500, 1500), model)
    stream = io.StringIO()
    results = list(predict_frames(model, frames_of((1500, 1500), 7) + frames_of((60, 60), 5), 12,
                                  ("calcium", "wall_lumen"), memory_budget_bytes=int(2.5 * per_frame),
                                  warnings=Warnings(stream)))
    assert len(results) == 12
    assert model.batch_shapes == [(2, 1500, 1500)] * 3 + [(1, 1500, 1500), (5, 60, 60)]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: frames of 1500x1500 (WxH) need about ")
    assert "--batch-size 12 reduced to 2" in lines[0]


def test_predict_refuses_a_frame_larger_than_memory():
    from ivus_tf.predict import predict_frames

    with pytest.raises(InputError, match="frames of 6000x6000 \\(WxH\\) need about .* GB each through the model, "
                                         "more than"):
        list(predict_frames(FakeModel(), frames_of((6000, 6000), 1), 12, ("calcium",),
                            memory_budget_bytes=10**8, memory_total_bytes=10**9))


def test_frame_bytes_matches_the_measured_peak_of_a_6000_pixel_frame():
    from ivus_tf.pullback.batching import frame_bytes

    class Export:  # the measurement: a full-width U-Net at 256x256, one 6000x6000 frame: 3.2 GB peak
        info = {"model_input_size": [256, 256], "parameters": 41_500_000}

    assert 2.0e9 < frame_bytes((6000, 6000), Export()) < 3.5e9


# --------------------------------------------------------------------------------- 7: file-system errors

def test_predict_into_an_unwritable_folder_is_one_line(tmp_path, capsys):
    from ivus_tf import predict

    folder = write_image_folder(tmp_path / "pb", [geometry_frame()[0]])
    parent = unwritable_parent(tmp_path)
    real = predict.load_model
    predict.load_model = lambda path, *args, **kwargs: FakeModel()
    try:
        status = run_cli(predict.main, ["--model", str(tmp_path), "--input", str(folder), "--out",
                                        str(parent / "out"), "--pixel-spacing-mm", "0.02"])
    finally:
        predict.load_model = real
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(f"error: {parent}") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------- minor: export

@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    from ivus_tf.models import build_model

    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    build_model("unet_res", ("calcium",), input_shape=(32, 32, 1), width=0.0625).save(path)
    return path


def test_garbage_keras_file_is_not_a_valid_keras_file(tmp_path):
    from ivus_tf.export.source import load_source

    garbage = tmp_path / "model.keras"
    garbage.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(InputError, match=rf"^{garbage}: cannot load the Keras model: not a valid .keras file "
                                         r"\(a .keras file is a zip archive"):
        load_source(garbage)


def test_export_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, tiny_keras, capsys):
    from ivus_tf.export.__main__ import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub", unwritable_parent(tmp_path) / "models"):
        assert run_cli(main, [str(tiny_keras), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def serving_default(tiny_keras):
    """The tiny model's serving signature, traced once for the shapes below."""
    from ivus_tf.export.serving import ServingModule
    from ivus_tf.export.source import load_source

    src = load_source(tiny_keras)
    module = ServingModule(src.model, src.image_size, src.tasks)
    yield module.signatures()["serving_default"]
    del module


@pytest.mark.parametrize("shape", [(), (5,), (4, 4), (1, 4, 4, 3)])
def test_serving_signature_rank_error_says_so_in_the_exception(serving_default, shape):
    from ivus_tf.core.tf_import import import_tensorflow
    from ivus_tf.export.serving import FRAMES_SHAPE_ERROR

    tf = import_tensorflow()
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        serving_default(frames=tf.zeros(shape, tf.uint8))
    assert FRAMES_SHAPE_ERROR in str(error.value)


def test_tensorrt_advice_does_not_contradict_itself(tmp_path, monkeypatch):
    from ivus_tf.export import tensorrt_engine

    monkeypatch.setattr(tensorrt_engine, "tensorrt_missing", lambda: "no tensorrt here")
    with pytest.raises(tensorrt_engine.TensorRTUnavailable) as error:
        tensorrt_engine.export_tensorrt("RUN", tmp_path / "m")
    message, commands = str(error.value), error.value.commands
    fp16 = [c for c in commands if "--fp16" in c]
    assert len(fp16) == 1 and "TensorRT 11 has no --fp16" not in message
    assert "--fp16 line needs TensorRT 10 or older" in message
