"""The shift test (`python -m ivus_tf.shift`): arc agreement by hand, stub predictors with known answers on a tiny
shifted set, the cache, the training-seed guard, one-line errors, and a tiny trained run end to end (slow)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.shift.figure import FIGURE_NAME
from ivus_tf.shift.frames import arc_agreement
from ivus_tf.shift.predictors import ModelUnderTest, predict_nothing
from ivus_tf.shift.report import JSON_NAME, MARKDOWN_NAME, ROWS
from ivus_tf.shift.testset import check_seed, training_phantom

TINY = dict(cases=2, frames_per_case=2, seed=1000, image_size=96, postprocess="none")
TOP_KEYS = {"format", "package_version", "created_utc", "model", "test_sets", "baselines", "results",
            "run_test_cases", "frames", "units", "definitions", "targets"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A phantom cache of this module's own: the tiny test sets are generated once, then reused."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("cache")
    mp.setenv("IVUS_TF_CACHE", str(folder))
    yield folder
    mp.undo()


def stub(predict, tasks=("calcium", "wall_lumen")) -> ModelUnderTest:
    return ModelUnderTest(predict, "stub predictor", "stub", tuple(tasks))


def truth(frames):
    return [{"calcium": f["calcium_mask"].copy(), "wall_lumen": f["wall_lumen_mask"].copy()} for f in frames]


def score(model, out, log=None, **changes):
    from ivus_tf.shift import score_on_preset

    return score_on_preset(model, out_dir=out, log=log or (lambda text: None), **{**TINY, **changes})


# ------------------------------------------------------------------------------------------- arcs by hand

def test_arc_agreement_by_hand():
    result = arc_agreement([10, 80, 200], [0, 90, 180])
    # predicted - mean = (-86.67, -16.67, 103.33), truth - mean = (-90, 0, 90):
    # r = 17100 / sqrt(18466.67 * 16200) = 0.988654; errors 10, 10, 20 -> MAE 13.33, bias (10 - 10 + 20) / 3
    assert result["pearson_r"] == pytest.approx(0.988654, abs=1e-6)
    assert result["mean_absolute_error_deg"] == pytest.approx(40 / 3)
    assert result["bias_deg"] == pytest.approx(20 / 3)
    assert result["frames"] == 3 and result["truth_mean_deg"] == pytest.approx(90)
    same = arc_agreement([0, 90, 180], [0, 90, 180])
    assert same["pearson_r"] == pytest.approx(1) and same["mean_absolute_error_deg"] == 0
    nothing = arc_agreement([0, 0, 0], [0, 90, 180])  # a constant side has no correlation
    assert math.isnan(nothing["pearson_r"]) and nothing["mean_absolute_error_deg"] == pytest.approx(90)
    assert math.isnan(arc_agreement([], [])["mean_absolute_error_deg"])


# ------------------------------------------------------------------------------------ stubs on a tiny set

@pytest.fixture(scope="module")
def truth_result(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("truth")
    lines = []
    return score(stub(truth), out, log=lines.append), out, lines


def test_a_predictor_returning_the_truth_scores_perfectly(truth_result):
    result, out, _ = truth_result
    assert TOP_KEYS <= set(json.loads((out / JSON_NAME).read_text()))
    assert (out / FIGURE_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for role in ("in_distribution", "shifted"):
        model = result["results"][role]["model"]
        assert model["frames"] == 4
        assert model["calcium"]["dice"]["mean"] == 1 and model["calcium"]["average_hausdorff_mm"]["mean"] == 0
        assert model["lumen"]["dice"]["mean"] == 1 and model["vessel"]["dice"]["mean"] == 1
        arcs = [row["truth_calcium_arc_deg"] for row in result["frames"][role]["model"]]
        assert np.std(arcs) > 0, "the tiny set's arcs must vary for r to be defined"
        assert model["calcium_arc"]["all_frames"]["pearson_r"] == pytest.approx(1)
        assert model["calcium_arc"]["all_frames"]["mean_absolute_error_deg"] == 0
    sets = result["test_sets"]
    assert sets["shifted"]["preset"] == "shifted" and sets["in_distribution"]["preset"] == "randomized"
    assert "assumed" in sets["in_distribution"]["source"]  # a stub says nothing about its training data
    assert result["baselines"]["rule"]["available"] is False and "rule" not in result["results"]["shifted"]
    assert "model_raw" not in result["results"]["shifted"]  # nothing to compare without cleaning


def test_the_model_is_scored_after_cleaning_and_before(truth_result, cache, tmp_path):
    """A predictor returning the truth plus a calcium blob in the lumen: default cleaning removes the blob (calcium
    lies outside the lumen), so the cleaned model scores perfectly and the raw one does not."""
    def blob(frames):
        out = truth(frames)
        for answer in out:
            lumen = np.argwhere(answer["wall_lumen"] == 1)
            row, col = lumen.mean(axis=0).round().astype(int)
            answer["calcium"][row - 2:row + 3, col - 2:col + 3] = 1
        return out

    result = score(stub(blob), tmp_path, postprocess="default")
    assert result["model"]["postprocess"]["preset"] == "default"
    for role in ("in_distribution", "shifted"):
        cleaned, raw = result["results"][role]["model"], result["results"][role]["model_raw"]
        assert cleaned["calcium"]["dice"]["mean"] == 1 and cleaned["lumen"]["dice"]["mean"] == 1
        assert raw["calcium"]["dice"]["mean"] < 1


def test_shift_md_holds_the_table(truth_result):
    result, out, lines = truth_result
    text = (out / MARKDOWN_NAME).read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[1:5] == ["in-distribution (randomized)", "shifted (shifted)", "predict-nothing",
                                          "rule"]
    assert len(table) == 2 + len(ROWS)  # header, rule, one line per metric
    lumen = next(line for line in table if line.startswith("| lumen Dice"))
    nothing = result["results"]["shifted"]["predict_nothing"]["lumen"]["dice"]["mean"]
    assert lumen.split(" | ")[1:5] == ["1.000", "1.000", f"{nothing:.3f}", "n/a"]
    assert any("| calcium arc r, all frames |" in line for line in lines)  # the CLI prints the table


def test_a_predictor_returning_nothing_gives_the_predict_nothing_numbers(truth_result, cache, tmp_path):
    result = score(stub(predict_nothing), tmp_path)
    for role in ("in_distribution", "shifted"):
        model, floor = result["results"][role]["model"], result["results"][role]["predict_nothing"]
        assert model == floor
        rows = result["frames"][role]["model"]
        arcs = np.array([row["truth_calcium_arc_deg"] for row in rows])
        assert model["calcium_arc"]["all_frames"]["mean_absolute_error_deg"] == pytest.approx(arcs.mean())
        assert math.isnan(model["calcium_arc"]["all_frames"]["pearson_r"])
        with_calcium = [row for row in rows if row["truth_has_calcium"]]
        expected_dice = 1 - len(with_calcium) / len(rows)  # Dice 1 on calcium-free frames, 0 elsewhere
        assert model["calcium"]["dice"]["mean"] == pytest.approx(expected_dice)


def test_arc_numbers_by_hand_for_a_predictor_that_misses_every_other_frame(truth_result, cache, tmp_path):
    calls = {"n": 0}

    def half(frames):
        out = []
        for answer, frame in zip(truth(frames), frames):
            calls["n"] += 1
            if calls["n"] % 2 == 0:
                answer["calcium"] = np.zeros_like(frame["calcium_mask"])
            out.append(answer)
        return out

    result = score(stub(half), tmp_path)
    for role in ("in_distribution", "shifted"):
        rows = result["frames"][role]["model"]
        truth_arcs = np.array([row["truth_calcium_arc_deg"] for row in rows])
        missed = np.array([row["calcium_empty_case"] == "pred_empty" for row in rows])
        predicted = np.where(missed, 0.0, truth_arcs)
        arc = result["results"][role]["model"]["calcium_arc"]["all_frames"]
        assert arc["mean_absolute_error_deg"] == pytest.approx(truth_arcs[missed].sum() / len(rows))
        assert arc["bias_deg"] == pytest.approx(-truth_arcs[missed].sum() / len(rows))
        assert arc["pearson_r"] == pytest.approx(np.corrcoef(predicted, truth_arcs)[0, 1])
        assert [row["calcium_arc_deg"] for row in rows] == pytest.approx(predicted.tolist())


def test_the_test_sets_are_cached_and_reused(truth_result, cache, tmp_path):
    first, _, first_lines = truth_result
    records = [first["test_sets"][role]["records"] for role in ("in_distribution", "shifted")]
    stamps = [(Path(r) / "index.json").stat().st_mtime_ns for r in records]
    lines = []
    again = score(stub(truth), tmp_path, log=lines.append)
    assert [again["test_sets"][role]["records"] for role in ("in_distribution", "shifted")] == records
    assert [(Path(r) / "index.json").stat().st_mtime_ns for r in records] == stamps
    assert sum("generating" in line for line in first_lines) == 2  # the module's first call made both sets
    assert not any("generating" in line for line in lines) and sum("cached in" in line for line in lines) == 2
    other = score(stub(truth), tmp_path, seed=1001, cases=1, frames_per_case=1)
    assert other["test_sets"]["shifted"]["records"] != records[1]


# ------------------------------------------------------------------------------------------ guards, errors

def test_the_seed_of_the_training_phantom_is_refused(tmp_path):
    records = tmp_path / "phantom-randomized-32x12-abc" / "records"
    records.mkdir(parents=True)
    config = {"data": str(records), "phantom_preset": "randomized", "phantom_seed": 7}
    trained = training_phantom(config)
    assert (trained.preset, trained.seed) == ("randomized", 7)
    with pytest.raises(InputError, match="training vessels"):
        check_seed(7, trained)
    check_seed(8, trained)
    assert training_phantom({"data": str(tmp_path / "my_records")}) is None  # the user's own data
    from tfrecords_builder.phantom import PRESETS

    knobs = PRESETS["benchmark"]
    (records.parent / "key.json").write_text(json.dumps(
        {"preset": "benchmark", "seed": 3, "knobs": json.loads(json.dumps(dataclasses.asdict(knobs)))}))
    from_key = training_phantom(config)  # the cache's key.json wins: it is what the frames were made from
    assert (from_key.preset, from_key.seed, from_key.knobs) == ("benchmark", 3, knobs)


@pytest.mark.parametrize("args, message", [
    (["/no/such/run"], "error: /no/such/run: no such run folder, .keras file or export folder"),
    (["README.md"], "error: README.md: not a .keras model file, training run folder or export folder"),
    (["tests", "--out", "x"], "error: tests: neither a training run folder (no model.keras) nor an ivus-tf export"),
    (["/no/such/run", "--cases", "0"], "error: python -m ivus_tf.shift: argument --cases: must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "ivus_tf.shift", *args], capture_output=True, text=True, cwd=root)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not (root / "x").exists()


# ----------------------------------------------------------------------------- a tiny trained run, slow

@pytest.mark.slow
def test_a_tiny_trained_run_end_to_end(cache, tmp_path):
    from conftest import synthetic_frame
    from ivus_tf.evaluation import evaluate_model
    from ivus_tf.postprocess import PRESETS, postprocess_frame
    from ivus_tf.shift.__main__ import main
    from ivus_tf.shift.predictors import load_model_under_test, rule_baseline
    from ivus_tf.training.config import TrainConfig
    from ivus_tf.training.run import run_training
    from tfrecords_builder.writer import write_records

    frames = {f"case{i}": [synthetic_frame(f"case{i}", f"{j:02d}", (72, 80), seed=10 * i + j,
                                           pixel_spacing_mm=0.03) for j in range(2)] for i in range(4)}
    records = tmp_path / "records"
    write_records(frames, records)
    config = TrainConfig(scheme="multitask", arch="unet_res", width=0.0625, image_size=64, batch_size=4, epochs=1,
                         steps_per_epoch=1, data=str(records), out=str(tmp_path / "run"), repeats=1, folds=2,
                         test_fraction=0.25, tb_image_every_epochs=0, run_eagerly=True)
    run_dir = run_training(config, log=lambda text: None)["run_dir"]
    assert main([str(run_dir), "--cases", "2", "--frames-per-case", "2", "--image-size", "96"]) == 0
    result = json.loads((run_dir / JSON_NAME).read_text())
    assert TOP_KEYS <= set(result) and (run_dir / MARKDOWN_NAME).is_file()
    assert result["model"]["kind"] == "run_folder" and result["run_test_cases"]["calcium"]["frames"] >= 1
    rule = result["baselines"]["rule"]
    recorded = json.loads((run_dir / "metrics.json").read_text())["calcium"]["rule_baseline"]
    assert rule["available"] and "fitted by the training run" in rule["source"] and rule["params"] == recorded["params"]
    assert "Rule baseline: fitted by the training run" in (run_dir / MARKDOWN_NAME).read_text()
    for role in ("in_distribution", "shifted"):
        summary = result["results"][role]["rule"]
        assert summary["frames"] == 4 and summary["lumen"] is None and summary["calcium"]["dice"]["n"] == 4
        assert {row["arc_center"] for row in result["frames"][role]["rule"]} == {"image"}
    for role in ("in_distribution", "shifted"):
        for name in ("model", "predict_nothing"):
            summary = result["results"][role][name]
            assert summary["frames"] == 4 and set(summary["calcium_arc"]) == {"all_frames", "frames_with_calcium"}
            assert summary["lumen"]["dice"]["n"] == 4 and summary["vessel"]["dice"]["n"] == 4

    # Without the run's metrics.json (an export records the config, not the fit) the rule is fitted again on the
    # run's calcium training cases: the same fit.
    model = load_model_under_test(run_dir)
    refit = rule_baseline(dataclasses.replace(model, run_dir=None), log=lambda text: None)[1]
    assert "fitted now" in refit["source"] and refit["params"] == recorded["params"]
    assert refit["fitted_on"]["case_ids"] == recorded["fitted_on"]["case_ids"]

    # The model ran as ivus_tf.evaluation runs it: the same masks at original resolution.
    shifted = result["test_sets"]["shifted"]["records"]
    from ivus_tf.data.records import iterate_frames

    test_frames = list(iterate_frames(shifted))
    ours = model.predict(test_frames)
    import keras

    keras_model = keras.models.load_model(run_dir / "model.keras", compile=False)
    evaluated = evaluate_model(keras_model, shifted, sorted({f["case_id"] for f in test_frames}),
                               ("calcium", "wall_lumen"), 64, predictions_dir=tmp_path / "predictions",
                               postprocess=PRESETS["default"])  # the run's setting: cleaned maps are written
    assert evaluated["num_frames"] == 4 and result["model"]["postprocess"]["preset"] == "default"
    import cv2

    ours = [dict(zip(("calcium", "wall_lumen"), postprocess_frame(p["calcium"], p["wall_lumen"],
                                                                  f["pixel_spacing_mm"], PRESETS["default"])))
            for p, f in zip(ours, test_frames)]
    for frame, mine in zip(test_frames, ours):
        folder = tmp_path / "predictions" / frame["case_id"]
        theirs = cv2.imread(str(folder / f"{frame['frame_id']}_wall_lumen.png"), cv2.IMREAD_UNCHANGED)
        assert np.mean(theirs == mine["wall_lumen"]) > 0.999
        theirs = cv2.imread(str(folder / f"{frame['frame_id']}_calcium.png"), cv2.IMREAD_UNCHANGED) > 0
        assert np.mean(theirs == (mine["calcium"] > 0)) > 0.999


def test_a_test_set_never_shares_a_cache_folder_with_a_training_phantom(tmp_path, monkeypatch):
    """Same preset, size and seed: the training phantom alternates labels, a test set has both on every frame."""
    from ivus_tf.training.config import TrainConfig
    from ivus_tf.training.phantom_cache import dataset_settings, phantom_folder, phantom_knobs, settings_folder

    monkeypatch.setenv("IVUS_TF_CACHE", str(tmp_path))
    config = TrainConfig(phantom_cases=4, phantom_frames_per_case=3, phantom_seed=5)
    training = phantom_folder(config)
    same = dataset_settings("randomized", phantom_knobs(config), 4, 3, 5, disjoint_tasks=True)
    assert settings_folder(same) == training  # the training cache is the general cache with alternating labels
    both = dataset_settings("randomized", phantom_knobs(config), 4, 3, 5, disjoint_tasks=False)
    assert settings_folder(both) != training and settings_folder(both).parent == tmp_path
