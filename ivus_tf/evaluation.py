"""Evaluating a trained model on whole cases: per-frame Dice and average Hausdorff distance at ORIGINAL resolution.

A distance in mm only means something on the frame's own pixel grid, so each task's softmax probabilities are
resized back to the frame's H x W with the pipeline's operator (bilinear, half-pixel centres, no antialiasing;
resizing probabilities, not labels, keeps contours smooth) before argmax and `ivus_tf.metrics`. Only frames carrying
a task's label count for that task. With `postprocess`, the cleaned maps are scored too and become the headline
(raw scores under "raw"). Definitions: docs/metrics.md; the metrics.json layout: docs/metrics.md#metricsjson.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from ivus_tf import metrics as M
from ivus_tf.core.atomic import atomic_output_dir, atomic_write_json
from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.core.vocab import check_tasks
from ivus_tf.data.pipeline import PipelineConfig, make_eval_dataset
from ivus_tf.data.records import iterate_frames
from ivus_tf.postprocess import PostprocessConfig, describe_postprocess, postprocess_frame
from ivus_tf.run_folder import PREDICTION_SCALE, prediction_path

tf = import_tensorflow()

__all__ = ["SECTIONS", "evaluate_model", "format_summary", "predict_nothing_baseline", "predicted_labels",
           "resize_probabilities", "rule_baseline", "write_metrics_json"]

WALL_LUMEN_REGIONS = ("lumen", "vessel_wall", "vessel")
WALL_LUMEN_MEAN = "wall_lumen_mean"
SECTIONS = {"calcium": ("calcium",), "wall_lumen": WALL_LUMEN_REGIONS + (WALL_LUMEN_MEAN,)}


def resize_probabilities(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [H, W, C] from [S, S, C] probabilities: `tf.image.resize` bilinear, half-pixel centres, no antialias."""
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.shape[:2] == (height, width):
        return probabilities
    return tf.image.resize(probabilities, (height, width), method="bilinear", antialias=False).numpy()


def predicted_labels(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] label map: argmax of the probabilities resized to the original size (`resize_probabilities`)."""
    return np.argmax(resize_probabilities(probabilities, height, width), axis=-1).astype(np.uint8)


def _check_options(tasks: Sequence[str], points: str, empty: str) -> tuple[str, ...]:
    tasks = check_tasks(tasks)
    if points not in M.POINT_SETS:
        raise InputError(f"points must be one of {', '.join(M.POINT_SETS)}, got {points!r}")
    if empty not in M.EMPTY_RULES:
        raise InputError(f"empty must be one of {', '.join(M.EMPTY_RULES)}, got {empty!r}")
    return tasks


def _check_cases(case_ids: Iterable[str]) -> list[str]:
    case_ids = list(case_ids)
    duplicates = sorted({c for c in case_ids if case_ids.count(c) > 1})
    if duplicates:
        raise InputError(f"case id(s) listed twice: {', '.join(map(repr, duplicates))}")
    return case_ids


def _predict(model, images: np.ndarray, tasks: Sequence[str]) -> dict:
    """{task: numpy [B, S, S, C]}: one inference call on the whole batch (Keras `predict_on_batch` when present)."""
    outputs = model.predict_on_batch(images) if hasattr(model, "predict_on_batch") else model(images, training=False)
    if not isinstance(outputs, Mapping):
        if len(tasks) != 1:
            raise InputError(f"the model has one unnamed output, but tasks are {list(tasks)}")
        outputs = {tasks[0]: outputs}
    missing = [t for t in tasks if t not in outputs]
    if missing:
        raise InputError(f"the model has no output named {', '.join(map(repr, missing))} "
                         f"(outputs: {', '.join(map(repr, outputs))})")
    return {task: np.asarray(outputs[task]) for task in tasks}


def _labelled_frames(records_dir, case_ids: Sequence[str], tasks: Sequence[str]) -> Iterator[dict]:
    """Original-resolution frames that carry a label of one of `tasks`, in stored order (the eval dataset's order)."""
    for frame in iterate_frames(records_dir, case_ids):
        if any(frame[f"{task}_mask"] is not None for task in tasks):
            yield frame


def _frame_metrics(task: str, labels: np.ndarray, truth: np.ndarray, spacing: float, points: str,
                   empty: str) -> dict:
    """{section: evaluate_frame-style dict} of one task on one frame."""
    if task == "calcium":
        return {"calcium": M.evaluate_frame(labels, truth, spacing, points=points, empty=empty)}
    result = M.wall_lumen_metrics(labels, truth, spacing, points=points, empty=empty)
    return {**{region: result[region] for region in WALL_LUMEN_REGIONS}, WALL_LUMEN_MEAN: result["mean"]}


def _section(frames: list[dict], case_ids: Sequence[str]) -> dict:
    per_case = {case: [f for f in frames if f["case_id"] == case] for case in case_ids}
    return {"frames": frames, "summary": M.summarize_frames(frames),
            "per_case": {case: M.summarize_frames(found) for case, found in per_case.items() if found}}


def _write_prediction(folder: Path, case_id: str, frame_id: str, task: str, labels: np.ndarray) -> None:
    path = prediction_path(folder, case_id, frame_id, task)
    path.parent.mkdir(exist_ok=True)
    if not cv2.imwrite(str(path), (labels * PREDICTION_SCALE[task]).astype(np.uint8)):
        raise OSError(f"{path}: could not write the prediction PNG")


def _clean(labels: dict, spacing: float, postprocess: PostprocessConfig) -> dict:
    """{task: label map} of one frame after `postprocess_frame` (calcium 0/1, wall-lumen 0/1/2, both uint8)."""
    calcium, wall_lumen = postprocess_frame(labels.get("calcium"), labels.get("wall_lumen"), spacing, postprocess)
    cleaned = {"calcium": calcium, "wall_lumen": wall_lumen}
    return {task: cleaned[task] for task in labels}


def _definitions(points: str, empty: str, image_size: int) -> dict:
    point_text = ("every foreground pixel" if points == "all"
                  else "contour pixels (foreground with a 4-neighbour in the background)")
    one_empty = ("the image diagonal in mm" if empty == "diagonal"
                 else "NaN (null in JSON), left out of the statistics and counted in n_nan")
    return {
        "prediction": f"softmax probabilities of the {image_size}x{image_size} output resized to the frame's "
                      "original size (tf.image.resize, bilinear, half-pixel centres, no antialiasing; the "
                      "pipeline's convention), then argmax",
        "dice": "2|P & T| / (|P| + |T|) per frame at the frame's original resolution",
        "average_hausdorff_mm": "modified Hausdorff distance (Dubuisson & Jain 1994): max of the two directed mean "
                                f"distances between {point_text} of prediction and truth, Euclidean, in mm from the "
                                "frame's pixel spacing, at the frame's original resolution",
        "empty_masks": f"both empty: Dice 1, distance 0; exactly one empty: Dice 0, distance {one_empty}; "
                       "empty_case counts frames per rule (pred_empty = missed, target_empty = false alarm)",
        "frames": "only frames carrying a task's label count for that task",
        "sections": "calcium; lumen (label 1), vessel_wall (label 2), vessel (inside the EEM, labels 1|2), "
                    "wall_lumen_mean (per-frame mean of lumen and vessel wall, Bargsten et al. Fig. 4)",
        "postprocess": "with post-processing (ivus_tf.postprocess) the top-level sections score the cleaned maps "
                       "(the headline) and 'raw' the argmax maps; 'postprocess' names the steps",
        "summary": "mean, sample std (ddof=1) and median over frames; n_nan values left out; per_case: the same "
                   "over each case's frames",
    }


def evaluate_model(model, records_dir, case_ids, tasks, image_size, batch_size=12, predictions_dir=None,
                   points="all", empty="diagonal", postprocess: PostprocessConfig | None = None) -> dict:
    """Run `model` on the frames of `case_ids` and return the metrics.json content (docs/metrics.md#metricsjson).

    `model` is a Keras model (or any object with `predict_on_batch` or `__call__`) whose outputs are
    {task: softmax [B, S, S, C]}, S = `image_size`. Frames carrying no label of `tasks` are skipped. With
    `predictions_dir`, the (cleaned, with `postprocess`) argmax maps are written at original resolution as
    `<case_id>/<frame_id>_calcium.png` (0/255) and `_wall_lumen.png` (0/1/2), replacing the folder atomically.
    """
    tasks = _check_options(tasks, points, empty)
    case_ids = _check_cases(case_ids)
    config = PipelineConfig(image_size=int(image_size), batch_size=int(batch_size), tasks=tasks, flip=False,
                            rotate=False, shuffle_buffer=0, cache=False)
    dataset = make_eval_dataset(records_dir, case_ids, config, with_metadata=True)
    originals = _labelled_frames(records_dir, case_ids, tasks)
    cleaning = postprocess is not None and postprocess.enabled
    sections = {name: [] for task in tasks for name in SECTIONS[task]}
    raw_sections = {name: [] for name in sections}
    nothing = {name: [] for name in sections}
    frames_per_task = dict.fromkeys(tasks, 0)
    num_frames = 0
    writing = (atomic_output_dir(predictions_dir, overwrite=True) if predictions_dir is not None
               else contextlib.nullcontext(None))
    with writing as folder:
        for images, _, _, metadata in dataset.as_numpy_iterator():
            probabilities = _predict(model, images, tasks)
            for i in range(len(images)):
                frame = next(originals, None)
                key = (metadata["case_id"][i].decode(), metadata["frame_id"][i].decode())
                if frame is None or (frame["case_id"], frame["frame_id"]) != key:
                    raise RuntimeError(f"records reader and eval pipeline disagree at frame {key}")
                num_frames += 1
                height, width = frame["image"].shape
                spacing = frame["pixel_spacing_mm"]
                ids = {"case_id": key[0], "frame_id": key[1]}
                wanted = [t for t in tasks if cleaning or folder is not None or frame[f"{t}_mask"] is not None]
                raw = {task: predicted_labels(probabilities[task][i], height, width) for task in wanted}
                labels = _clean(raw, spacing, postprocess) if cleaning else raw
                for task in tasks:
                    truth = frame[f"{task}_mask"]
                    if folder is not None:
                        _write_prediction(folder, key[0], key[1], task, labels[task])
                    if truth is None:
                        continue
                    frames_per_task[task] += 1
                    for name, result in _frame_metrics(task, labels[task], truth, spacing, points, empty).items():
                        sections[name].append({**ids, **result})
                    if cleaning:
                        for name, result in _frame_metrics(task, raw[task], truth, spacing, points, empty).items():
                            raw_sections[name].append({**ids, **result})
                    for name, result in _frame_metrics(task, np.zeros_like(truth), truth, spacing, points,
                                                       empty).items():
                        nothing[name].append(result)
        if next(originals, None) is not None:
            raise RuntimeError("records reader and eval pipeline disagree: the reader has more labelled frames")
    result = {"tasks": list(tasks), "case_ids": case_ids, "image_size": int(image_size), "points": points,
              "empty": empty, "num_frames": num_frames, "frames_per_task": frames_per_task,
              "metric_definitions": _definitions(points, empty, int(image_size))}
    for name, frames in sections.items():
        result[name] = _section(frames, case_ids)
        result[name]["predict_nothing_baseline"] = M.summarize_frames(nothing[name])
    result["postprocess"] = {"headline": "postprocessed" if cleaning else "raw", **describe_postprocess(postprocess)}
    if cleaning:
        result["raw"] = {name: _section(frames, case_ids) for name, frames in raw_sections.items()}
    return result


def predict_nothing_baseline(records_dir, case_ids, task="calcium", *, points="all", empty="diagonal") -> dict:
    """Scores of a model that predicts nothing (all background) on the frames carrying `task`'s label.

    calcium: `summarize_frames` of `evaluate_frame(empty, truth)`: Dice is the share of calcium-free frames, the
    distance the image diagonal on every frame with calcium (or NaN with `empty="nan"`). wall_lumen:
    `summarize_wall_lumen`. A trained model must beat this; with rare calcium it is not a low bar for Dice.
    """
    tasks = _check_options((task,), points, empty)
    results = []
    for frame in _labelled_frames(records_dir, _check_cases(case_ids), tasks):
        truth = frame[f"{task}_mask"]
        nothing = np.zeros_like(truth)
        spacing = frame["pixel_spacing_mm"]
        if task == "calcium":
            results.append(M.evaluate_frame(nothing, truth, spacing, points=points, empty=empty))
        else:
            results.append(M.wall_lumen_metrics(nothing, truth, spacing, points=points, empty=empty))
    return M.summarize_frames(results) if task == "calcium" else M.summarize_wall_lumen(results)


def _calcium_frames(records_dir, case_ids: Sequence[str]) -> list[dict]:
    return [f for f in iterate_frames(records_dir, case_ids) if f["calcium_mask"] is not None]


def rule_baseline(records_dir, train_cases, test_cases, *, points="all", empty="diagonal", log=None) -> dict:
    """Fit the calcium rule (`ivus_tf.baselines`) on the calcium frames of `train_cases` and score it on those of
    `test_cases` exactly as `evaluate_model` scores a model; returns the "rule_baseline" section of metrics.json.

    Only training cases may be passed as `train_cases`: the fit must not see the test set. Without a calcium training
    frame the rule cannot be fitted (`InputError`).
    """
    import time

    from ivus_tf.baselines import fit_rule, predict_calcium, score_rule

    _check_options(("calcium",), points, empty)
    train_cases, test_cases = _check_cases(train_cases), _check_cases(test_cases)
    leaked = sorted(set(train_cases) & set(test_cases))
    if leaked:
        raise InputError(f"rule baseline: case(s) {', '.join(leaked)} are both training and test cases")
    train = _calcium_frames(records_dir, train_cases)
    if not train:
        raise InputError(f"{records_dir}: the training cases carry no calcium frame to fit the rule baseline on")
    started = time.perf_counter()
    images, masks, spacings = ([f[key] for f in train] for key in ("image", "calcium_mask", "pixel_spacing_mm"))
    params = fit_rule(images, masks, spacings)
    seconds = time.perf_counter() - started
    fitted_on = {"case_ids": sorted({f["case_id"] for f in train}), "frames": len(train),
                 "mean_dice": float(score_rule(images, masks, spacings, params).mean())}
    frames = []
    for frame in _calcium_frames(records_dir, test_cases):
        prediction = predict_calcium(frame["image"], frame["pixel_spacing_mm"], params)
        frames.append({"case_id": frame["case_id"], "frame_id": frame["frame_id"],
                       **M.evaluate_frame(prediction, frame["calcium_mask"], frame["pixel_spacing_mm"],
                                          points=points, empty=empty)})
    if log:
        cases = len(fitted_on["case_ids"])
        log(f"rule baseline: fitted on {len(train)} calcium frames of {cases} training case{'s' * (cases != 1)} "
            f"in {seconds:.0f} s (training Dice {fitted_on['mean_dice']:.3f}); scored on {len(frames)} test frames")
    return {"params": params.to_dict(), "fitted_on": fitted_on, "seconds": round(seconds, 1),
            **_section(frames, test_cases)}


# ------------------------------------------------------------------------------------------------ output

def write_metrics_json(path, metrics: Mapping) -> Path:
    """Write `metrics` as indented JSON (NaN as null, so any JSON reader takes it), atomically."""
    return atomic_write_json(path, metrics, indent=2)


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _summary_line(label: str, what: str, summary: Mapping) -> str:
    dice, distance = summary["dice"], summary["average_hausdorff_mm"]
    line = (f"{label}: Dice {_number(dice['mean'])} +- {_number(dice['std'])} (median {_number(dice['median'])}), "
            f"average Hausdorff {_number(distance['mean'])} +- {_number(distance['std'])} mm "
            f"(median {_number(distance['median'])}) over {summary['frames']} frames")
    notes = []
    counts = summary.get("empty_cases", {})
    if counts.get("both_empty") or (what == "calcium" and counts):
        notes.append(f"{counts['both_empty']} without {what} in truth and prediction")
    if counts.get("pred_empty"):
        notes.append(f"{counts['pred_empty']} missed")
    if counts.get("target_empty"):
        notes.append(f"{counts['target_empty']} false alarm{'s' if counts['target_empty'] > 1 else ''}")
    if distance.get("n_nan"):
        notes.append(f"{distance['n_nan']} with one empty mask left out of the distance")
    return line + (f" ({', '.join(notes)})" if notes else "")


def format_summary(metrics: Mapping) -> str:
    """A few human lines for the CLI from `evaluate_model`'s result (or metrics.json read back)."""
    labels = {"calcium": ("calcium", "calcium"), "lumen": ("lumen", "lumen"),
              "vessel_wall": ("vessel wall", "vessel wall"), "vessel": ("vessel (EEM)", "vessel"),
              WALL_LUMEN_MEAN: ("wall-lumen mean", "wall-lumen")}
    lines = []
    for name, (label, what) in labels.items():
        if name not in metrics:
            continue
        lines.append(_summary_line(label, what, metrics[name]["summary"]))
        baseline = metrics[name].get("predict_nothing_baseline")
        if baseline is not None and baseline["frames"] and name != WALL_LUMEN_MEAN:
            lines.append(f"  predicting no {what}: Dice {_number(baseline['dice']['mean'])}, average Hausdorff "
                         f"{_number(baseline['average_hausdorff_mm']['mean'])} mm")
        rule = metrics[name].get("rule_baseline")
        if rule is not None and rule["summary"]["frames"]:
            summary = rule["summary"]
            lines.append(f"  calcium rule (bright edge + shadow, fitted on {len(rule['fitted_on']['case_ids'])} "
                         f"training cases): Dice {_number(summary['dice']['mean'])}, average Hausdorff "
                         f"{_number(summary['average_hausdorff_mm']['mean'])} mm")
        raw = (metrics.get("raw") or {}).get(name)
        if raw is not None:
            lines.append(f"  without post-processing: Dice {_number(raw['summary']['dice']['mean'])}, average "
                         f"Hausdorff {_number(raw['summary']['average_hausdorff_mm']['mean'])} mm")
    return "\n".join(lines)
