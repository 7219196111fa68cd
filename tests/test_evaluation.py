"""Tests of `ivus_tf.evaluation`: per-frame metrics at the original resolution, against a hand computation."""

from __future__ import annotations

import json
import math

import cv2
import keras
import numpy as np
import pytest

from conftest import synthetic_frame
from ivus_tf import metrics as M
from ivus_tf.core.errors import InputError
from ivus_tf.data import PipelineConfig, iterate_frames, make_eval_dataset
from ivus_tf.evaluation import (
    evaluate_model,
    format_summary,
    predict_nothing_baseline,
    rule_baseline,
    write_metrics_json,
)
from ivus_tf.models import build_model
from ivus_tf.postprocess import PRESETS, postprocess_frame

BOTH = ("calcium", "wall_lumen")
SIZE = 32
CASES = ["a", "b"]
# Case "a": 48 x 40 frames at 0.02 mm, "b": 64 x 64 at 0.031 mm; every label combination, one unlabelled frame,
# and frame b/0 carries a calcium label without calcium (a calcium-free frame).
LAYOUT = {"a": [("0", BOTH), ("1", ("calcium",)), ("2", ("wall_lumen",)), ("3", ())],
          "b": [("0", ("calcium",)), ("1", BOTH), ("2", ("wall_lumen",))]}
SHAPES = {"a": (48, 40), "b": (64, 64)}
SPACING_MM = {"a": 0.02, "b": 0.031}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from tfrecords_builder.writer import write_records

    frames = {case: [synthetic_frame(case, fid, SHAPES[case], tasks, seed=10 * i + j, pixel_spacing_mm=SPACING_MM[case])
                     for j, (fid, tasks) in enumerate(rows)]
              for i, (case, rows) in enumerate(LAYOUT.items())}
    frames["b"][0]["calcium_mask"][:] = 0
    out = tmp_path_factory.mktemp("evaluation") / "records"
    write_records(frames, out)
    return out


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(3)
    model = build_model("unet_res", BOTH, input_shape=(SIZE, SIZE, 1), width=0.0625)
    for task in BOTH:  # logits x 20: an untrained model's near-ties would make the hand computation's argmax fragile
        layer = model.get_layer(f"{task}_head_logits")
        layer.set_weights([20 * weight for weight in layer.get_weights()])
    return model


class Oracle:
    """A fake model that knows the answers: softmax of (4 * one-hot of the S x S targets + Gaussian noise).

    It reads the eval pipeline in lockstep with `evaluate_model`, so its predictions are shaped like the truth (with
    speckle from the noise: every empty-mask case and real distances); noise 0 gives exact one-hot maps.
    """

    def __init__(self, records, tasks=BOTH, noise=1.5, batch_size=3, seed=0, cases=CASES):
        config = PipelineConfig(image_size=SIZE, batch_size=batch_size, tasks=tasks, cache=False)
        self._batches = make_eval_dataset(records, cases, config).as_numpy_iterator()
        self._noise, self._rng = noise, np.random.default_rng(seed)

    def predict_on_batch(self, images):
        _, targets, _ = next(self._batches)
        outputs = {}
        for task, target in targets.items():
            assert target.shape == images.shape[:3]
            classes = 2 if task == "calcium" else 3
            logits = 4.0 * np.eye(classes)[target] + self._noise * self._rng.normal(size=target.shape + (classes,))
            outputs[task] = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        return outputs


def bilinear_half_pixel(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [h, w, c] with half-pixel centres and edge clamping (TF 2's `tf.image.resize` convention),
    written independently of TensorFlow: output pixel i samples input coordinate (i + 0.5) * in / out - 0.5."""

    def taps(n_in, n_out):
        source = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, n_in - 1), source - low

    x = np.asarray(x, np.float64)
    low, high, frac = taps(x.shape[0], height)
    x = x[low] * (1 - frac)[:, None, None] + x[high] * frac[:, None, None]
    low, high, frac = taps(x.shape[1], width)
    return x[:, low] * (1 - frac)[None, :, None] + x[:, high] * frac[None, :, None]


def by_hand(model, records, tasks=BOTH, batch_size=3, **options) -> dict:
    """{(case_id, frame_id): {"labels": {task: map}, section: metrics}} computed without `ivus_tf.evaluation`."""
    config = PipelineConfig(image_size=SIZE, batch_size=batch_size, tasks=tasks, cache=False)
    probabilities = []
    for images, _, _ in make_eval_dataset(records, CASES, config).as_numpy_iterator():
        outputs = model.predict_on_batch(images)
        probabilities += [{task: np.asarray(outputs[task][i]) for task in tasks} for i in range(len(images))]
    frames = [f for f in iterate_frames(records, CASES) if any(f[f"{t}_mask"] is not None for t in tasks)]
    assert len(frames) == len(probabilities)
    expected = {}
    for frame, probs in zip(frames, probabilities):
        entry = expected[frame["case_id"], frame["frame_id"]] = {"labels": {}}
        for task in tasks:
            resized = bilinear_half_pixel(probs[task], *frame["image"].shape)
            top2 = np.sort(resized, axis=-1)[..., -2:]
            assert (top2[..., 1] - top2[..., 0]).min() > 1e-5, "test setup: an argmax too close to a tie"
            labels = entry["labels"][task] = np.argmax(resized, axis=-1)
            truth = frame[f"{task}_mask"]
            if truth is None:
                continue
            spacing = frame["pixel_spacing_mm"]
            if task == "calcium":
                entry["calcium"] = M.evaluate_frame(labels, truth, spacing, **options)
            else:
                regions = M.wall_lumen_metrics(labels, truth, spacing, **options)
                entry.update(lumen=regions["lumen"], vessel_wall=regions["vessel_wall"], vessel=regions["vessel"],
                             wall_lumen_mean=regions["mean"])
    return expected


def assert_sections_match(metrics: dict, expected: dict) -> None:
    for section in ("calcium", "lumen", "vessel_wall", "vessel", "wall_lumen_mean"):
        want = {key: entry[section] for key, entry in expected.items() if section in entry}
        got = {(f["case_id"], f["frame_id"]): f for f in metrics[section]["frames"]}
        assert list(got) == list(want), section  # the frames carrying the label, in stored order
        for key, result in want.items():
            assert got[key]["dice"] == pytest.approx(result["dice"], rel=1e-12, abs=0), (section, key)
            assert got[key]["average_hausdorff_mm"] == pytest.approx(result["average_hausdorff_mm"], rel=1e-12,
                                                                     nan_ok=True), (section, key)
            assert got[key].get("empty_case") == result.get("empty_case"), (section, key)


@pytest.fixture(scope="module")
def oracle_metrics(records, tmp_path_factory):
    predictions = tmp_path_factory.mktemp("predictions") / "predictions"
    predictions.mkdir()
    (predictions / "stale.txt").write_text("replaced")
    metrics = evaluate_model(Oracle(records), records, CASES, BOTH, SIZE, batch_size=3, predictions_dir=predictions)
    return metrics, predictions


def test_tiny_keras_model_matches_hand_computation(records, tiny_model):
    metrics = evaluate_model(tiny_model, records, CASES, BOTH, SIZE, batch_size=3)
    assert_sections_match(metrics, by_hand(tiny_model, records))
    assert metrics["num_frames"] == 6 and metrics["frames_per_task"] == {"calcium": 4, "wall_lumen": 4}
    assert metrics["tasks"] == list(BOTH) and metrics["image_size"] == SIZE


@pytest.mark.parametrize("options", [{}, {"points": "boundary", "empty": "nan"}])
def test_oracle_with_speckle_matches_hand_computation(records, options):
    metrics = evaluate_model(Oracle(records), records, CASES, BOTH, SIZE, batch_size=3, **options)
    expected = by_hand(Oracle(records), records, **options)
    assert_sections_match(metrics, expected)
    cases = {f["empty_case"] for section in ("calcium", "lumen") for f in metrics[section]["frames"]}
    assert {"both_present", "target_empty"} <= cases  # the speckle makes false alarms on calcium-free frames
    assert metrics["points"] == options.get("points", "all") and metrics["empty"] == options.get("empty", "diagonal")


def test_postprocessed_scores_are_the_headline_and_raw_scores_are_kept(records):
    """With a PostprocessConfig the top-level sections score the cleaned maps (by hand: `postprocess_frame` on the
    argmax maps of all tasks of a frame), "raw" holds the scores without cleaning, and metrics.json says so."""
    metrics = evaluate_model(Oracle(records), records, CASES, BOTH, SIZE, batch_size=3,
                             postprocess=PRESETS["default"])
    raw = by_hand(Oracle(records), records)
    assert_sections_match(metrics["raw"], raw)
    frames = {(f["case_id"], f["frame_id"]): f for f in iterate_frames(records, CASES)}
    cleaned, changed = {}, 0
    for key, entry in raw.items():
        frame = frames[key]
        spacing = frame["pixel_spacing_mm"]  # as stored (float32), as the evaluation reads it
        calcium, labels = postprocess_frame(entry["labels"]["calcium"], entry["labels"]["wall_lumen"].astype(np.uint8),
                                            spacing, PRESETS["default"])
        changed += int((calcium != entry["labels"]["calcium"]).sum() + (labels != entry["labels"]["wall_lumen"]).sum())
        cleaned[key] = {}
        if frame["calcium_mask"] is not None:
            cleaned[key]["calcium"] = M.evaluate_frame(calcium, frame["calcium_mask"], spacing)
        if frame["wall_lumen_mask"] is not None:
            regions = M.wall_lumen_metrics(labels, frame["wall_lumen_mask"], spacing)
            cleaned[key].update(lumen=regions["lumen"], vessel_wall=regions["vessel_wall"], vessel=regions["vessel"],
                                wall_lumen_mean=regions["mean"])
    assert changed > 50  # the speckled oracle leaves islands and stray regions to clean: the test means something
    assert_sections_match(metrics, cleaned)
    assert metrics["postprocess"]["headline"] == "postprocessed" and metrics["postprocess"]["preset"] == "default"
    assert metrics["calcium"]["summary"]["dice"]["mean"] != metrics["raw"]["calcium"]["summary"]["dice"]["mean"]
    lines = format_summary(metrics).splitlines()
    assert lines[0].startswith("calcium: Dice ") and lines[2].startswith("  without post-processing: Dice ")
    plain = evaluate_model(Oracle(records), records, CASES, BOTH, SIZE, batch_size=3, postprocess=PRESETS["none"])
    assert plain["postprocess"]["headline"] == "raw" and "raw" not in plain
    assert_sections_match(plain, raw)


def test_frames_without_a_tasks_label_are_excluded(oracle_metrics):
    metrics, _ = oracle_metrics

    def ids(section):
        return [(f["case_id"], f["frame_id"]) for f in metrics[section]["frames"]]

    assert ids("calcium") == [("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")]
    for section in ("lumen", "vessel_wall", "vessel", "wall_lumen_mean"):
        assert ids(section) == [("a", "0"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert "empty_case" not in metrics["wall_lumen_mean"]["frames"][0]


def test_one_task_evaluation_skips_the_other(records):
    oracle = Oracle(records, ("calcium",), batch_size=2, cases=["a"])
    metrics = evaluate_model(oracle, records, ["a"], ("calcium",), SIZE, batch_size=2)
    assert set(metrics) >= {"calcium"} and not {"lumen", "vessel_wall", "vessel", "wall_lumen_mean"} & set(metrics)
    assert metrics["num_frames"] == 2 and metrics["case_ids"] == ["a"]


def test_summaries_and_per_case(oracle_metrics):
    metrics, _ = oracle_metrics
    for section in ("calcium", "lumen", "wall_lumen_mean"):
        frames = metrics[section]["frames"]
        assert metrics[section]["summary"] == M.summarize_frames(frames)
        assert list(metrics[section]["per_case"]) == CASES
        for case, summary in metrics[section]["per_case"].items():
            assert summary == M.summarize_frames([f for f in frames if f["case_id"] == case])
        assert metrics[section]["summary"]["frames"] == 4


def test_perfect_predictions_score_near_one(records):
    metrics = evaluate_model(Oracle(records, noise=0.0), records, CASES, BOTH, SIZE, batch_size=3)
    # Only the nearest-neighbour resize to 32 x 32 and back separates these from the truth.
    assert metrics["calcium"]["summary"]["dice"]["mean"] > 0.88
    assert metrics["vessel"]["summary"]["dice"]["mean"] > 0.95
    assert metrics["lumen"]["summary"]["dice"]["mean"] > 0.93
    assert metrics["vessel"]["summary"]["average_hausdorff_mm"]["mean"] < 0.5 * SPACING_MM["b"]
    assert [f["empty_case"] for f in metrics["calcium"]["frames"]] == ["both_present"] * 2 + ["both_empty",
                                                                                             "both_present"]


def test_prediction_pngs_are_the_argmax_maps(records, oracle_metrics):
    _, predictions = oracle_metrics
    expected = by_hand(Oracle(records), records)
    written = sorted(p.relative_to(predictions).as_posix() for p in predictions.rglob("*") if p.is_file())
    assert written == sorted(f"{case}/{frame}_{task}.png" for case, frame in expected for task in BOTH)
    for (case, frame), entry in expected.items():
        for task, scale in (("calcium", 255), ("wall_lumen", 1)):
            png = cv2.imread(str(predictions / case / f"{frame}_{task}.png"), cv2.IMREAD_UNCHANGED)
            assert png.dtype == np.uint8 and png.shape == SHAPES[case]
            np.testing.assert_array_equal(png, entry["labels"][task] * scale)
    assert not list(predictions.parent.glob(".*"))  # no temporary folder left behind


def test_metrics_json_round_trip_without_nan_tokens(records, tmp_path):
    metrics = evaluate_model(Oracle(records), records, CASES, BOTH, SIZE, batch_size=3, empty="nan")
    distances = [f["average_hausdorff_mm"] for f in metrics["calcium"]["frames"]]
    assert any(math.isnan(d) for d in distances)  # target_empty frames under empty="nan"
    path = write_metrics_json(tmp_path / "run" / "metrics.json", metrics)
    def refuse(token):
        raise AssertionError(f"non-JSON token {token} in metrics.json")

    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert [f["average_hausdorff_mm"] for f in loaded["calcium"]["frames"]] == [
        None if math.isnan(d) else d for d in distances]
    assert loaded["calcium"]["summary"]["average_hausdorff_mm"]["n_nan"] == sum(map(math.isnan, distances))
    assert loaded["lumen"]["per_case"].keys() == metrics["lumen"]["per_case"].keys()
    assert format_summary(loaded) == format_summary(metrics)
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_format_summary_lines(oracle_metrics):
    metrics, _ = oracle_metrics
    lines = format_summary(metrics).splitlines()
    summary = metrics["calcium"]["summary"]
    assert lines[0].startswith(f"calcium: Dice {summary['dice']['mean']:.3f} +- {summary['dice']['std']:.3f} "
                               f"(median {summary['dice']['median']:.3f}), average Hausdorff "
                               f"{summary['average_hausdorff_mm']['mean']:.3f} +- ")
    assert "mm" in lines[0] and "over 4 frames" in lines[0]
    assert lines[1].startswith("  predicting no calcium: Dice ")
    assert [line.split(":")[0] for line in lines[2:]] == [
        "lumen", "  predicting no lumen", "vessel wall", "  predicting no vessel wall", "vessel (EEM)",
        "  predicting no vessel", "wall-lumen mean"]


def test_predict_nothing_baseline(records, oracle_metrics):
    metrics, _ = oracle_metrics
    results = [M.evaluate_frame(np.zeros_like(f["calcium_mask"]), f["calcium_mask"], f["pixel_spacing_mm"])
               for f in iterate_frames(records, CASES) if f["calcium_mask"] is not None]
    baseline = predict_nothing_baseline(records, CASES)
    assert baseline == M.summarize_frames(results) == metrics["calcium"]["predict_nothing_baseline"]
    assert baseline["frames"] == 4 and baseline["dice"]["mean"] == 0.25  # b/0 is calcium-free: Dice 1
    assert baseline["empty_cases"] == {"both_present": 0, "both_empty": 1, "pred_empty": 3, "target_empty": 0}
    distances = [M.image_diagonal_mm(SHAPES["a"], SPACING_MM["a"])] * 2 + [0.0, M.image_diagonal_mm(SHAPES["b"],
                                                                                                     SPACING_MM["b"])]
    assert baseline["average_hausdorff_mm"]["mean"] == pytest.approx(np.mean(distances))
    wall = predict_nothing_baseline(records, CASES, task="wall_lumen", empty="nan")
    assert wall["lumen"]["frames"] == 4 and wall["lumen"]["average_hausdorff_mm"]["n_nan"] == 4


def test_rule_baseline_is_fitted_on_training_cases_and_scored_like_a_model(records):
    from ivus_tf.baselines import RuleParams, predict_calcium

    lines = []
    rule = rule_baseline(records, ["a"], ["b"], log=lines.append)
    assert rule["fitted_on"]["case_ids"] == ["a"] and rule["fitted_on"]["frames"] == 2
    assert [(f["case_id"], f["frame_id"]) for f in rule["frames"]] == [("b", "0"), ("b", "1")]
    params = RuleParams.from_dict(rule["params"])
    test_frames = [f for f in iterate_frames(records, ["b"]) if f["calcium_mask"] is not None]
    for entry, frame in zip(rule["frames"], test_frames):
        expected = M.evaluate_frame(predict_calcium(frame["image"], frame["pixel_spacing_mm"], params),
                                    frame["calcium_mask"], frame["pixel_spacing_mm"])
        assert {k: entry[k] for k in expected} == expected
    assert rule["summary"] == M.summarize_frames(rule["frames"]) and list(rule["per_case"]) == ["b"]
    assert lines and "fitted on 2 calcium frames of 1 training case " in lines[0]
    with pytest.raises(InputError, match="both training and test cases"):
        rule_baseline(records, ["a"], ["a", "b"])
    with pytest.raises(InputError, match="points must be one of"):
        rule_baseline(records, ["a"], ["b"], points="edges")


def test_bad_inputs(records, tiny_model):
    with pytest.raises(InputError, match="unknown task"):
        evaluate_model(tiny_model, records, CASES, ("lumen",), SIZE)
    with pytest.raises(InputError, match="points must be one of"):
        evaluate_model(tiny_model, records, CASES, BOTH, SIZE, points="edges")
    with pytest.raises(InputError, match="listed twice: 'a'"):
        evaluate_model(tiny_model, records, ["a", "a"], BOTH, SIZE)
    with pytest.raises(InputError, match="unknown case id"):
        predict_nothing_baseline(records, ["zz"])
    calcium_model = build_model("unet_res", ("calcium",), input_shape=(SIZE, SIZE, 1), width=0.0625)
    with pytest.raises(InputError, match="no output named 'wall_lumen'"):
        evaluate_model(calcium_model, records, CASES, BOTH, SIZE)
