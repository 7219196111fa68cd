"""Ensembles and test-time augmentation in predict: averaging and un-flipping checked against a manual computation,
on fake members and on two tiny real exports (both engines where ONNX Runtime is installed), and end to end."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivus_tf import predict as predict_module
from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.ensemble import FLIPS, Ensemble, uncertainty_png
from ivus_tf.postprocess import PRESETS, postprocess_frame
from ivus_tf.predict import main, run_predict
from predict_helpers import FakeModel, geometry_frame, tiny_export, write_image_folder

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))
ENGINES = ["tensorflow"] + (["onnxruntime"] if HAVE_ONNX else [])
SECTORS = [(18, 28, 0, 90), (18, 28, 30, 200), None]


class RampModel:
    """A fake export whose probabilities depend on the pixel values AND on the position (a ramp across the frame),
    so it is not mirror-symmetric: averaging un-flipped passes gives a result that a wrong un-flip would not."""

    engine = "onnxruntime"
    info = {"fake": "ramp"}

    def __init__(self, seed=0, tasks=("calcium", "wall_lumen"), size=(32, 32), path="ramp"):
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(0, 2, (4, 4))  # per class: pixel value, row ramp, column ramp, bias
        self.tasks, self.model_input_size, self.path = tuple(tasks), tuple(size), path
        self.calls = 0

    def predict(self, frames, batch_size=8):
        self.calls += 1
        n, h, w = frames.shape
        rows, cols = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
        features = np.stack([frames / 255.0, np.broadcast_to(rows, (n, h, w)), np.broadcast_to(cols, (n, h, w)),
                             np.ones((n, h, w))], -1)
        logits = features @ self.weights  # [N, H, W, 4]: calcium takes classes 0-1, wall-lumen 1-3
        outputs = {}
        if "calcium" in self.tasks:
            calcium = np.exp(logits[..., :2]) / np.exp(logits[..., :2]).sum(-1, keepdims=True)
            outputs["calcium_probability"] = calcium[..., 1].astype(np.float32)
            outputs["calcium_mask"] = np.argmax(calcium, -1).astype(np.uint8)
        if "wall_lumen" in self.tasks:
            wall = np.exp(logits[..., 1:]) / np.exp(logits[..., 1:]).sum(-1, keepdims=True)
            outputs["wall_lumen_probability"] = wall.astype(np.float32)
            outputs["wall_lumen_labels"] = np.argmax(wall, -1).astype(np.uint8)
        return outputs


def frames_of(size=(40, 36), count=3):
    return np.stack([geometry_frame(size=size, center=(size[0] / 2, size[1] / 2), lumen_r=5, vessel_r=14,
                                    calcium=(7, 11, 30 * i, 30 * i + 120))[0] for i in range(count)])


def manual(members, frames, flips=("none",)):
    """Per task, the stack of every pass's probabilities, un-flipped by hand (not through `ivus_tf.ensemble`)."""
    stacks = {"calcium": [], "wall_lumen": []}
    for member in members:
        for flip in flips:
            axes = {"none": (), "horizontal": (2,), "vertical": (1,), "both": (1, 2)}[flip]
            outputs = member.predict(np.ascontiguousarray(np.flip(frames, axes) if axes else frames))
            un = (lambda a, axes=axes: np.flip(a, axes)) if axes else (lambda a: a)
            stacks["calcium"].append(un(outputs["calcium_probability"]))
            stacks["wall_lumen"].append(un(outputs["wall_lumen_probability"]))
    return {task: np.stack(s).astype(np.float64) for task, s in stacks.items()}


def assert_matches_manual(outputs, stacks, atol=1e-6):
    calcium, wall = stacks["calcium"], stacks["wall_lumen"]
    np.testing.assert_allclose(outputs["calcium_probability"], calcium.mean(0), atol=atol, rtol=0)
    np.testing.assert_allclose(outputs["wall_lumen_probability"], wall.mean(0), atol=atol, rtol=0)
    np.testing.assert_allclose(outputs["calcium_uncertainty"], calcium.std(0), atol=atol, rtol=0)
    np.testing.assert_allclose(outputs["wall_lumen_uncertainty"], wall.std(0).max(-1), atol=atol, rtol=0)
    decided = np.abs(calcium.mean(0) - 0.5) > 1e-5
    np.testing.assert_array_equal(outputs["calcium_mask"][decided], (calcium.mean(0) > 0.5)[decided])
    top2 = np.sort(wall.mean(0), -1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 1e-5
    np.testing.assert_array_equal(outputs["wall_lumen_labels"][decided], np.argmax(wall.mean(0), -1)[decided])
    # per frame: the mean spread over the pixels some pass calls calcium (resp. lumen or wall)
    region = (calcium > 0.5).any(0)
    spread = calcium.std(0)
    for i in range(len(calcium[0])):
        want = spread[i][region[i]].mean() if region[i].any() else 0.0
        assert outputs["calcium_uncertainty_mean"][i] == pytest.approx(want, abs=atol)
    region = (np.argmax(wall, -1) != 0).any(0)
    spread = wall.std(0).max(-1)
    for i in range(len(wall[0])):
        want = spread[i][region[i]].mean() if region[i].any() else 0.0
        assert outputs["wall_lumen_uncertainty_mean"][i] == pytest.approx(want, abs=atol)


# ------------------------------------------------------------------------------------------------ fake members

def test_ensemble_averages_members_and_reports_their_spread():
    members = [RampModel(1), RampModel(2), RampModel(3)]
    frames = frames_of()
    outputs = Ensemble(members).predict(frames)
    stacks = manual(members, frames)
    assert_matches_manual(outputs, stacks)
    assert outputs["calcium_uncertainty"].max() > 0.05  # the members do disagree: the test means something


def test_tta_averages_the_unflipped_passes():
    model = RampModel(4)
    frames = frames_of(count=2)
    ensemble = Ensemble([model], tta=True)
    assert ensemble.passes == 4 and ensemble.flips == list(FLIPS)
    outputs = ensemble.predict(frames)
    assert model.calls == 4
    assert_matches_manual(outputs, manual([model], frames, FLIPS))
    # without un-flipping the result would differ (the model depends on position)
    wrong = np.mean([np.asarray(model.predict(np.ascontiguousarray(np.flip(frames, axes) if axes else frames))
                                ["calcium_probability"]) for axes in FLIPS.values()], 0)
    assert np.abs(outputs["calcium_probability"] - wrong).max() > 0.05


def test_one_model_without_tta_is_the_model_itself():
    model = RampModel(5)
    frames = frames_of(count=1)
    outputs = Ensemble([model]).predict(frames)
    want = model.predict(frames)
    assert sorted(outputs) == sorted(want) and "calcium_uncertainty" not in outputs
    for name in want:
        np.testing.assert_array_equal(outputs[name], want[name])


def test_members_must_match():
    with pytest.raises(InputError, match=r"^exports/b: tasks \['calcium'\] differ from exports/a's"):
        Ensemble([RampModel(1), RampModel(2, tasks=("calcium",))], paths=["exports/a", "exports/b"])
    with pytest.raises(InputError,
                       match=r"^exports/b: model input size \[64, 64\] differs from exports/a's \[32, 32\]"):
        Ensemble([RampModel(1), RampModel(2, size=(64, 64))], paths=["exports/a", "exports/b"])
    with pytest.raises(InputError, match="exports/b: the model gave no 'wall_lumen_probability' output"):
        masks_only = RampModel(2)
        masks_only.predict = lambda frames, batch_size=8: {k: v for k, v in RampModel(2).predict(frames).items()
                                                            if k != "wall_lumen_probability"}
        Ensemble([RampModel(1), masks_only], paths=["exports/a", "exports/b"]).predict(frames_of(count=1))


def test_uncertainty_png_scale():
    std = np.array([[0.0, 0.25, 0.5, 0.7]])
    png = uncertainty_png(std)
    assert png.dtype == np.uint16 and png.tolist() == [[0, 32768, 65535, 65535]]
    np.testing.assert_allclose(png[:, :3] / 131070, std[:, :3], atol=1 / 131070)


def test_predict_with_mismatched_models_is_one_line_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    folder = write_image_folder(tmp_path / "pb", list(frames_of(count=2)))
    tasks = {"a": ("calcium", "wall_lumen"), "b": ("calcium",)}
    monkeypatch.setattr(predict_module, "load_model", lambda path, *args: FakeModel(tasks=tasks[Path(path).name]))
    status = run_cli(main, ["--model", str(tmp_path / "a"), "--model", str(tmp_path / "b"), "--input", str(folder),
                            "--out", str(tmp_path / "out"), "--pixel-spacing-mm", "0.02"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: {tmp_path / 'b'}: tasks ['calcium'] differ from {tmp_path / 'a'}'s")
    assert not (tmp_path / "out").exists()


def test_predict_ensemble_of_fake_models_agreeing_has_zero_spread(tmp_path):
    images = [geometry_frame(calcium=sector)[0] for sector in SECTORS]
    folder = write_image_folder(tmp_path / "pb", images)
    summary = run_predict(["a", "b"], folder, tmp_path / "out", pixel_spacing_mm=0.02,
                          model=[FakeModel(), FakeModel()], tta=True)
    assert summary["ensemble"]["forward_passes_per_frame"] == 8 and summary["ensemble"]["tta"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "measurements.csv", newline="")))
    assert [float(r["calcium_uncertainty_mean"]) for r in rows] == [0, 0, 0]
    assert float(rows[0]["calcium_arc_deg"]) == pytest.approx(90, abs=2 * np.degrees(np.arctan(0.71 / 18)))
    png = cv2.imread(str(tmp_path / "out" / "masks" / "frame0_calcium_uncertainty.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (96, 96) and not png.any()


# ------------------------------------------------------------------------------------------------ real exports

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two tiny U-Nets of different seeds, exported (SavedModel + model.onnx when the ONNX tools are there)."""
    root = tmp_path_factory.mktemp("saved_models")
    return [tiny_export(root / f"tiny-f{fold}", seed=fold) for fold in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_ensemble_of_two_exports_averages_exactly(exports, engine):
    from ivus_tf.export import load_exported

    members = [load_exported(path, engine=engine) for path in exports]
    frames = frames_of(size=(48, 40))
    ensemble = Ensemble(members, paths=exports)
    assert ensemble.engine == engine
    stacks = manual(members, frames)
    assert np.abs(stacks["calcium"][0] - stacks["calcium"][1]).max() > 0.1  # two different models
    assert_matches_manual(ensemble.predict(frames), stacks)  # same batches as the manual passes: same rounding


@pytest.mark.slow
def test_tta_on_an_export_equals_manually_flipped_passes(exports):
    from ivus_tf.export import load_exported

    model = load_exported(exports[0], engine=ENGINES[-1])
    frames = frames_of(size=(48, 40), count=2)
    assert_matches_manual(Ensemble([model], tta=True).predict(frames), manual([model], frames, FLIPS))


@pytest.mark.slow
def test_predict_two_models_with_tta_end_to_end(exports, tmp_path, capsys):
    from ivus_tf.export import load_exported

    images = [geometry_frame(size=(80, 72), center=(40, 36), calcium=sector)[0] for sector in SECTORS]
    folder = write_image_folder(tmp_path / "pb", images)
    out = tmp_path / "out"
    assert main(["--model", str(exports[0]), "--model", str(exports[1]), "--tta", "--input", str(folder),
                 "--out", str(out), "--pixel-spacing-mm", "0.02", "--batch-size", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ensemble"]["models"] == [str(p.resolve()) for p in exports]
    assert summary["ensemble"]["forward_passes_per_frame"] == 8 and summary["ensemble"]["flips"] == list(FLIPS)
    assert summary["model"] == [str(p.resolve()) for p in exports] and summary["postprocess"]["preset"] == "default"
    assert f"engine: {summary['engine']}" in capsys.readouterr().out

    engine = ENGINES[-1]  # what --engine auto picked
    expected = Ensemble([load_exported(p, engine=engine) for p in exports], tta=True).predict(np.stack(images))
    rows = list(csv.DictReader(open(out / "measurements.csv", newline="")))
    assert len(rows) == 3
    for i, row in enumerate(rows):
        calcium, labels = postprocess_frame(expected["calcium_mask"][i], expected["wall_lumen_labels"][i], 0.02,
                                            PRESETS["default"])
        written = cv2.imread(str(out / "masks" / f"frame{i}_calcium.png"), cv2.IMREAD_UNCHANGED)
        assert (written != calcium * 255).mean() < 0.002  # the same up to pixels at a tie
        written = cv2.imread(str(out / "masks" / f"frame{i}_wall_lumen.png"), cv2.IMREAD_UNCHANGED)
        assert (written != labels).mean() < 0.002
        for task in ("calcium", "wall_lumen"):
            png = cv2.imread(str(out / "masks" / f"frame{i}_{task}_uncertainty.png"), cv2.IMREAD_UNCHANGED)
            assert png.dtype == np.uint16 and png.shape == (80, 72)
            assert np.abs(png.astype(int) - uncertainty_png(expected[f"{task}_uncertainty"][i])).max() <= 2
            assert float(row[f"{task}_uncertainty_mean"]) == pytest.approx(
                float(expected[f"{task}_uncertainty_mean"][i]), abs=2e-5)
        assert float(row["calcium_uncertainty_mean"]) > 0  # two models, four views: they do disagree somewhere
        assert float(row["calcium_arc_deg"]) >= float(row["calcium_arc_unbridged_deg"])
        assert (out / "overlays" / f"frame{i}.png").is_file()
