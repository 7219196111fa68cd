"""Export: SavedModel in a fresh process vs the Keras model with the pipeline's pre/postprocessing, saved_model_cli,
variables stored once, ONNX Runtime vs TensorFlow, the loader's engine choice, bad input, TensorRT missing."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.export import __main__ as cli
from ivus_tf.export import export_onnx, export_savedmodel, load_exported, read_info, tensorrt_engine
from ivus_tf.export.savedmodel import check_version
from ivus_tf.export.source import load_source
from ivus_tf.models import build_model

tf = import_tensorflow()
SIZE = 64
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="ONNX tools missing: pip install -e '.[export]'")
ALL_OUTPUTS = ["calcium_probability", "calcium_mask", "wall_lumen_probability", "wall_lumen_labels"]


def _sharpen(model, logit_std: float = 3.0):
    """Scale each head's logits to a spread of `logit_std`, so an untrained model gives decisive, spatially
    varying probabilities (its own are all near 1 / classes) and mask comparisons mean something."""
    images = _frames((2, SIZE, SIZE), seed=99)[..., None].astype(np.float32) / 255.0
    probabilities = model.predict(images, verbose=0)
    for task, p in probabilities.items():
        log_p = np.log(np.maximum(p, 1e-12))
        centred = log_p - log_p.mean(-1, keepdims=True)  # the logits up to a per-pixel constant
        factor = logit_std / float(centred.std())
        kernel, bias = model.get_layer(f"{task}_head_logits").get_weights()
        bias = (bias - centred.reshape(-1, p.shape[-1]).mean(0)) * factor  # every class wins somewhere
        model.get_layer(f"{task}_head_logits").set_weights([kernel * factor, bias])
    return model


def _frames(shape, seed=0):
    """Smooth uint8 frames (a bright blob on noise), closer to IVUS than white noise."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    y, x = np.mgrid[:h, :w]
    blob = np.exp(-(((y - h * 0.4) / (0.2 * h)) ** 2 + ((x - w * 0.6) / (0.25 * w)) ** 2))
    return np.clip(200 * blob + rng.normal(40, 25, shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(0)
    model = _sharpen(build_model("unet_res", ("calcium", "wall_lumen"), input_shape=(SIZE, SIZE, 1), width=0.0625))
    model.save(run / "model.keras")
    (run / "config.yaml").write_text("scheme: multitask\narch: unet_res\nwidth: 0.0625\nimage_size: 64\n")
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """saved_models/ivus/1: SavedModel + model.onnx of the run (SavedModel only without the ONNX tools)."""
    out = tmp_path_factory.mktemp("saved_models") / "ivus"
    return (export_onnx if HAVE_ONNX else export_savedmodel)(run_dir, out, version=1)


def reference(model, frames: np.ndarray) -> dict:
    """The Keras model with the pipeline's preprocessing (ivus_tf.data.pipeline: tf.image.resize, round to
    uint8, / 255) and the evaluation's postprocessing (ivus_tf.evaluation.resize_probabilities, argmax)."""
    from ivus_tf.evaluation import resize_probabilities

    n, h, w = frames.shape
    images = tf.image.resize(frames[..., None], (SIZE, SIZE), method="bilinear")
    images = (tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8).numpy() / 255.0).astype(np.float32)
    probabilities = model.predict(images, verbose=0)
    out = {name: [] for name in ALL_OUTPUTS}
    for i in range(n):
        calcium = resize_probabilities(probabilities["calcium"][i], h, w)
        wall = resize_probabilities(probabilities["wall_lumen"][i], h, w)
        out["calcium_probability"].append(calcium[..., 1])
        out["calcium_mask"].append(np.argmax(calcium, -1).astype(np.uint8))
        out["wall_lumen_probability"].append(wall)
        out["wall_lumen_labels"].append(np.argmax(wall, -1).astype(np.uint8))
    return {k: np.stack(v) for k, v in out.items()}


def assert_outputs_agree(got: dict, want: dict, atol: float, max_atol: float | None = None):
    """Same names, shapes, dtypes; probabilities within `atol` on average and `max_atol` everywhere; masks equal
    wherever the probability difference at that pixel cannot explain a different argmax.

    Across engines a few resized input pixels round to the other grey level (the engines' resize arithmetic
    differs by ~0.01 grey levels before the pipeline's rounding), which moves the probabilities of a small
    neighbourhood by up to ~1e-2 in these sharpened random models; elsewhere they agree to ~1e-6."""
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype, name
    for name in ("calcium_probability", "wall_lumen_probability"):
        difference = np.abs(got[name] - want[name])
        assert difference.mean() <= atol and difference.max() <= (max_atol or atol), (
            f"{name}: mean difference {difference.mean():.2g}, max {difference.max():.2g}")
    two_class = lambda out: np.stack([1 - out["calcium_probability"], out["calcium_probability"]], -1)  # noqa: E731
    for mask, got_p, want_p in (("calcium_mask", two_class(got), two_class(want)),
                                ("wall_lumen_labels", got["wall_lumen_probability"], want["wall_lumen_probability"])):
        top2 = np.sort(want_p, -1)[..., -2:]
        margin = top2[..., 1] - top2[..., 0]
        assert (margin > 0.02).mean() > 0.8, f"{mask}: too few decided pixels for a meaningful test"
        explained = margin <= 2 * np.abs(got_p - want_p).max(-1) + 1e-6
        assert np.array_equal(got[mask][~explained], want[mask][~explained]), mask
    assert 0 < want["calcium_mask"].mean() < 1 and len(np.unique(want["wall_lumen_labels"])) == 3


FRESH_PROCESS = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    serve = loaded.signatures["serving_default"]
    inputs = np.load(sys.argv[2])
    out = {}
    for key in ("a", "b"):
        for name, value in serve(frames=tf.constant(inputs[key])).items():
            out[f"{key}/{name}"] = value.numpy()
    np.savez(sys.argv[3], **out)
""")


@pytest.mark.slow
def test_savedmodel_in_fresh_process_matches_keras_with_pipeline_processing(exported, run_dir, tmp_path):
    a, b = _frames((2, 80, 96), seed=1), _frames((1, 50, 41), seed=2)
    np.savez(tmp_path / "in.npz", a=a, b=b[..., None])  # [N, H, W] and [N, H, W, 1]
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS)
    subprocess.run([sys.executable, str(script), str(exported), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True, capture_output=True, timeout=300)
    out = np.load(tmp_path / "out.npz")
    model = keras.saving.load_model(run_dir / "model.keras")
    for key, frames in (("a", a), ("b", b)):
        got = {name.split("/")[1]: out[name] for name in out.files if name.startswith(f"{key}/")}
        assert got["calcium_mask"].shape == frames.shape  # outputs at the INPUT size
        assert_outputs_agree(got, reference(model, frames), atol=1e-5)


@pytest.mark.slow
def test_saved_model_cli_lists_named_signature(exported):
    cli_path = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run([str(cli_path), "show", "--dir", str(exported), "--tag_set", "serve",
                             "--signature_def", "serving_default"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "inputs['frames']" in text and "DT_UINT8" in text and "unknown_rank" in text
    for name in ALL_OUTPUTS:
        assert f"outputs['{name}']" in text
    assert "output_0" not in text


@pytest.mark.slow
def test_variables_stored_once_and_record_written(exported, run_dir):
    info = read_info(exported)
    stored = tf.train.list_variables(str(exported / "variables" / "variables"))
    stored_mb = sum(int(np.prod(shape)) * 4 for name, shape in stored) / 1e6
    assert stored_mb == pytest.approx(info["sizes_mb"]["weights"], rel=0.01)  # Keras' model.export: 2x
    assert info["tasks"] == ["calcium", "wall_lumen"] and info["arch"] == "unet_res"
    assert info["class_names"]["wall_lumen"] == ["background", "lumen", "vessel_wall"]
    assert info["model_input_size"] == [SIZE, SIZE] and list(info["outputs"]) == ALL_OUTPUTS
    assert info["config"]["scheme"] == "multitask"
    assert (exported / "assets.extra" / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
    if HAVE_ONNX:
        assert info["files"] == {"savedmodel": ".", "onnx": "model.onnx"}
        check = info["onnx"]["check_against_tensorflow"]
        assert check["mean_abs_probability_difference"] < 1e-4 and check["max_abs_probability_difference"] < 0.05
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.slow
@needs_onnx
def test_onnxruntime_matches_tensorflow(exported):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["frames"]
    assert session.get_inputs()[0].shape == ["N", "H", "W"]
    assert sorted(o.name for o in session.get_outputs()) == sorted(ALL_OUTPUTS)
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    for frames in (_frames((3, 97, 120), seed=3), _frames((1, SIZE, SIZE), seed=4), _frames((2, 33, 48), seed=5)):
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"frames": frames})))
        want = {k: v.numpy() for k, v in serve(frames=tf.constant(frames)).items()}
        assert_outputs_agree(got, want, atol=1e-4, max_atol=0.05)


@pytest.mark.slow
@needs_onnx
def test_loader_picks_engine_and_predicts(exported, monkeypatch):
    frames = _frames((5, 70, 90), seed=6)
    onnx_model = load_exported(exported.parent)  # NAME -> its highest version
    assert onnx_model.engine == "onnxruntime" and onnx_model.tasks == ("calcium", "wall_lumen")
    assert onnx_model.info["model_input_size"] == [SIZE, SIZE] and "onnxruntime" in onnx_model.description
    tf_model = load_exported(exported, engine="tensorflow")
    assert tf_model.engine == "tensorflow"
    got, want = onnx_model.predict(frames, batch_size=2), tf_model.predict(frames[..., None])
    assert list(got) == ALL_OUTPUTS and got["calcium_mask"].dtype == np.uint8
    assert_outputs_agree(got, want, atol=1e-4, max_atol=0.05)
    empty = onnx_model.predict(np.zeros((0, 30, 40), np.uint8))
    assert empty["wall_lumen_probability"].shape == (0, 30, 40, 3)
    with pytest.raises(InputError, match="uint8"):
        onnx_model.predict(frames.astype(np.float32))
    with pytest.raises(InputError, match=r"\[N, H, W\]"):
        onnx_model.predict(frames[0])

    # A SavedModel-only version 2 is now the highest: auto takes TensorFlow.
    v2 = exported.parent / "2"
    shutil.copytree(exported, v2, ignore=shutil.ignore_patterns("model.onnx"))
    assert load_exported(exported.parent).engine == "tensorflow"
    with pytest.raises(InputError, match="no model.onnx"):
        load_exported(v2, engine="onnxruntime")
    monkeypatch.setattr("ivus_tf.export.loader.onnxruntime_available", lambda: False)
    assert load_exported(exported).engine == "tensorflow"


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(exported, run_dir, tmp_path, capsys):
    with pytest.raises(InputError, match="not an ivus-tf export"):
        load_exported(tmp_path)
    with pytest.raises(InputError, match="unknown engine"):
        load_exported(exported, engine="tensorrt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(InputError, match="no model.keras"):
        export_savedmodel(tmp_path / "empty_run", tmp_path / "out")
    assert load_source(run_dir / "model.keras").tasks == ("calcium", "wall_lumen")  # a .keras file directly
    with pytest.raises(InputError, match="no such run folder"):
        export_savedmodel(tmp_path / "missing.keras", tmp_path / "out")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot load the Keras model"):
        export_savedmodel(tmp_path / "broken.keras", tmp_path / "out")
    with pytest.raises(InputError, match="version must be"):
        export_savedmodel(run_dir, tmp_path / "out", version=0)
    assert not (tmp_path / "out").exists()
    # An existing version is refused by the CLI with one line, exit status 2, and left as it was.
    before = sorted(p.name for p in exported.iterdir())
    status = run_cli(cli.main, [str(run_dir), "--out", str(exported.parent), "--version", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "--overwrite" in err and "--version" in err
    assert sorted(p.name for p in exported.iterdir()) == before
    assert check_version(exported.parent, 1, overwrite=True) == exported  # --overwrite lets it through


def test_tensorrt_missing_says_what_and_how(run_dir, tmp_path, capsys, monkeypatch):
    if importlib.util.find_spec("tensorrt") is None:
        assert "tensorrt Python package is not installed" in tensorrt_engine.tensorrt_missing()
    else:  # a GPU machine: simulate the missing case
        monkeypatch.setattr(tensorrt_engine, "tensorrt_missing", lambda: "no usable NVIDIA GPU")
    out = tmp_path / "trt"
    status = run_cli(cli.main, [str(run_dir), "--out", str(out), "--format", "tensorrt",
                                "--trt-profile", "1x64x64,1x500x500,8x1024x1024"])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2 and lines[0].startswith("error: --format tensorrt:") and not out.exists()
    from ivus_tf.core.commands import python

    assert lines[1].strip() == f"{python()} -m ivus_tf.export {run_dir} --out {out} --version 1 --format onnx"
    shapes = "--minShapes=frames:1x64x64 --optShapes=frames:1x500x500 --maxShapes=frames:8x1024x1024"
    assert lines[2].strip() == f"trtexec --onnx={out}/1/model.onnx --saveEngine={out}/1/model_fp32.plan {shapes}"
    assert lines[3].strip() == (f"trtexec --onnx={out}/1/model.onnx --saveEngine={out}/1/model_fp16.plan {shapes} "
                                "--fp16")
    with pytest.raises(InputError, match="MIN,OPT,MAX"):
        tensorrt_engine.parse_profile("1x64x64,8x1024x1024")
    with pytest.raises(InputError, match="grow"):
        tensorrt_engine.parse_profile("1x512x512,1x64x64,8x1024x1024")


@needs_onnx
@pytest.mark.skipif(importlib.util.find_spec("onnxconverter_common") is None,
                    reason="onnxconverter-common missing: pip install -e '.[export]'")
@pytest.mark.slow
def test_float16_onnx_for_tensorrt_runs_close_to_float32(exported, tmp_path):
    """The float16 ONNX that TensorRT >= 11 builds fp16 engines from, run here on ONNX Runtime's CPU kernels."""
    import onnxruntime as ort

    tensorrt_engine.float16_onnx(exported / "model.onnx", tmp_path / "model_fp16.onnx")
    frames = _frames((2, 80, 72), seed=7)
    runs = []
    for path in (exported / "model.onnx", tmp_path / "model_fp16.onnx"):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs.append(dict(zip([o.name for o in session.get_outputs()], session.run(None, {"frames": frames}))))
    assert runs[1]["calcium_probability"].dtype == np.float32  # float32 outputs kept
    assert_outputs_agree(runs[1], runs[0], atol=5e-3, max_atol=0.15)


@pytest.mark.slow
@needs_onnx
def test_deeplabv3_calcium_only_model_exports_to_onnx(tmp_path):
    """The dilated convolutions (AtrousConv2D's native op) and ASPP pooling convert; only calcium outputs.
    (`export_onnx` itself runs ONNX Runtime and TensorFlow on the same frames and records the difference.)"""
    keras.utils.set_random_seed(1)
    model = build_model("deeplabv3", ("calcium",), input_shape=(SIZE, SIZE, 1), width=0.0625)
    version_dir = export_onnx(model, tmp_path / "deeplab", version=3)
    info = read_info(version_dir)
    assert info["arch"] == "deeplabv3" and info["tasks"] == ["calcium"] and info["config"] is None
    assert list(info["outputs"]) == ["calcium_probability", "calcium_mask"]
    check = info["onnx"]["check_against_tensorflow"]
    assert check["mean_abs_probability_difference"] < 1e-4 and check["max_abs_probability_difference"] < 0.05
    loaded = load_exported(version_dir)
    assert loaded.engine == "onnxruntime" and loaded.output_names == ["calcium_probability", "calcium_mask"]
    frames = _frames((2, 75, 90), seed=8)
    got = loaded.predict(frames)
    assert sorted(got) == ["calcium_mask", "calcium_probability"] and got["calcium_mask"].shape == frames.shape
    assert np.array_equal(got["calcium_mask"], got["calcium_probability"] > 0.5)
