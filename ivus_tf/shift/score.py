"""`score_on_preset`: a trained model on held-out phantom renderings, next to its in-distribution score and floors.

Two test sets drawn with one seed (`ivus_tf.shift.testset`): the preset under test (default `shifted`, which no
training recipe may use) and the in-distribution set (the phantom the run trained on, or `randomized`, the training
default, when the model does not say). Both image the same vessels, so the difference between the two columns is
the scanner's look alone. On each set the model, predict-nothing and (when available) the calcium rule baseline
are scored frame by frame at original resolution (`ivus_tf.shift.frames`), and the results are written as
shift.json and shift.md (`ivus_tf.shift.report`).

The model's masks are cleaned as `predict` and training runs clean them (`ivus_tf.postprocess`; the run's own
`postprocess` setting, else "default"); the uncleaned masks are scored too ("model_raw" in shift.json), so the
effect of the cleaning is on record. The floors are scored as they come.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

from ivus_tf.core.errors import InputError
from ivus_tf.core.progress import progress
from ivus_tf.core.version import __version__
from ivus_tf.measurements import DEFAULT_ARC_GAP_DEG
from ivus_tf.postprocess import PostprocessConfig, describe_postprocess, load_postprocess, postprocess_frame
from ivus_tf.run_folder import RunFolder
from ivus_tf.shift.frames import score_frame, summarize_rows, truth_arc_deg
from ivus_tf.shift.predictors import ModelUnderTest, Predictor, load_model_under_test, predict_nothing, rule_baseline
from ivus_tf.shift.testset import DEFAULT_SEED, TRAINING_DEFAULT_PRESET, check_seed, ensure_test_set, training_phantom
from tfrecords_builder.phantom import HELD_OUT_PRESETS, PRESETS

FORMAT = "ivus-tf shift test 1"
SET_NAMES = ("in_distribution", "shifted")

__all__ = ["DEFAULT_SEED", "FORMAT", "SET_NAMES", "score_on_preset", "score_records"]


def _batches(frames, batch_size: int) -> Iterator[list]:
    """Consecutive frames in lists of at most `batch_size`, cut where the case or the frame size changes."""
    for _, group in itertools.groupby(frames, key=lambda f: (f["case_id"], f["image"].shape)):
        group = list(group)
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


Predictions = Callable[[list], dict]  # a batch of frames -> {predictor name: one prediction per frame}


def score_records(records_dir, predict: Predictions, batch_size: int = 8, desc: str = "frames",
                  arc_gap_deg: float = DEFAULT_ARC_GAP_DEG) -> dict[str, list[dict]]:
    """{predictor name: `score_frame` rows} over every frame of `records_dir` (all must carry both labels)."""
    from ivus_tf.data.records import iterate_frames

    rows: dict[str, list[dict]] = {}
    for batch in progress(_batches(iterate_frames(records_dir), batch_size), desc=desc, unit="batch"):
        for frame in batch:
            if frame["calcium_mask"] is None or frame["wall_lumen_mask"] is None:
                raise InputError(f"{records_dir}: frame {frame['case_id']}/{frame['frame_id']} lacks a calcium or "
                                 "wall-lumen label; the shift test needs both on every frame")
        truths = [truth_arc_deg(frame, arc_gap_deg) for frame in batch]
        for name, predictions in predict(batch).items():
            rows.setdefault(name, []).extend(score_frame(p, f, t, arc_gap_deg)
                                             for p, f, t in zip(predictions, batch, truths))
    return rows


def _predict_all(model: ModelUnderTest, rule: Predictor | None, postprocess: PostprocessConfig) -> Predictions:
    """The model (cleaned, and raw when cleaning changes anything), predict-nothing and the rule on one batch."""
    def predict(frames: list) -> dict:
        raw = model.predict(frames)
        out = {"model": raw}
        if postprocess.enabled:
            out["model"] = [dict(zip(("calcium", "wall_lumen"), postprocess_frame(
                p["calcium"], p["wall_lumen"], f["pixel_spacing_mm"], postprocess))) for p, f in zip(raw, frames)]
            out["model_raw"] = raw
        out["predict_nothing"] = predict_nothing(frames)
        if rule is not None:
            out["rule"] = rule(frames)
        return out

    return predict


def _reference(model: ModelUnderTest, reference_preset: str | None):
    """(preset, knobs or None, where it came from) of the in-distribution set."""
    trained = training_phantom(model.training)
    if reference_preset is not None:
        return reference_preset, None, "chosen with --reference-preset"
    if trained is not None:
        return trained.preset, trained.knobs, "the phantom the model trained on: its knobs, another seed"
    return (TRAINING_DEFAULT_PRESET, None, "assumed: the training default preset; the model did not train on the "
            "embedded phantom, or does not say what it trained on")


def _run_test_cases(model: ModelUnderTest) -> dict | None:
    """The run's own test-case means from its metrics.json (another split of its own phantom), when there is one."""
    if model.run_dir is None or not RunFolder(model.run_dir).metrics_path.is_file():
        return None
    run = RunFolder(model.run_dir)
    metrics = run.read_metrics()
    out = {"source": str(run.metrics_path), "cases": len(metrics.get("case_ids", []))}
    for section in ("calcium", "lumen", "vessel"):
        if section in metrics:
            summary = metrics[section]["summary"]
            out[section] = {"frames": summary["frames"], "dice": summary["dice"]["mean"],
                            "average_hausdorff_mm": summary["average_hausdorff_mm"]["mean"]}
    return out


def score_on_preset(model, preset: str = "shifted", cases: int = 12, frames_per_case: int = 10,
                    seed: int = DEFAULT_SEED, out_dir=None, *, reference_preset: str | None = None,
                    image_size: int | None = None, batch_size: int = 8, engine: str = "auto",
                    postprocess: PostprocessConfig | str | None = None, arc_gap_deg: float = DEFAULT_ARC_GAP_DEG,
                    log: Callable[[str], None] = print) -> dict:
    """Score `model` (a run folder, `.keras` file or export path, or a `ModelUnderTest`) on `cases` x
    `frames_per_case` frames of `preset` and of its in-distribution counterpart; write shift.json and shift.md to
    `out_dir` (default: the run folder) and return the shift.json content (layout: `ivus_tf.shift.report`).

    `image_size` fixes the test frames' size (tests use small frames; the preset's own sizes otherwise).
    `postprocess`: a `PostprocessConfig`, a preset name or YAML file, or None for the run's own setting (else
    "default"); `arc_gap_deg`: the arc's gap bridging (`ivus_tf.measurements`; 0 = exact union)."""
    from ivus_tf.shift.report import DEFINITIONS, TARGETS, UNITS, format_table, write_report

    for name, value in (("preset", preset), ("reference preset", reference_preset)):
        if value is not None and value not in PRESETS:
            raise InputError(f"unknown {name} {value!r}; valid presets: {', '.join(PRESETS)}")
    if int(batch_size) < 1 or int(cases) < 1 or int(frames_per_case) < 1:
        raise InputError(f"cases, frames per case and batch size must be >= 1, got {cases}, {frames_per_case}, "
                         f"{batch_size}")
    if not 0 <= arc_gap_deg < 180:
        raise InputError(f"arc gap must be in [0, 180) degrees, got {arc_gap_deg}")
    if not isinstance(model, ModelUnderTest):
        model = load_model_under_test(model, engine)
    out_dir = Path(out_dir) if out_dir is not None else model.run_dir
    if out_dir is None:
        raise InputError(f"{model.description}: give --out (the default is the run folder, and this is none)")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    check_seed(seed, training_phantom(model.training))
    if postprocess is None:
        postprocess = (model.training or {}).get("postprocess") or "default"
    if isinstance(postprocess, str):
        postprocess = load_postprocess(postprocess)
    ref_preset, ref_knobs, ref_source = _reference(model, reference_preset)
    log(f"shift test: {model.description} on {cases} x {frames_per_case} frames of preset {preset} (seed {seed}) "
        f"and of preset {ref_preset} (in distribution: {ref_source})")
    rule, rule_info = rule_baseline(model, log)
    predict = _predict_all(model, rule, postprocess)
    sets, results, frames = {}, {}, {}
    for role, set_preset, knobs, source in (("in_distribution", ref_preset, ref_knobs, ref_source),
                                             ("shifted", preset, None,
                                              "held out: no training recipe uses it" if preset in HELD_OUT_PRESETS
                                              else "a training preset (not held out)")):
        records, settings = ensure_test_set(set_preset, cases, frames_per_case, seed, knobs, image_size, log)
        rows = score_records(records, predict, batch_size, f"{role} ({set_preset})", arc_gap_deg)
        sets[role] = {"preset": set_preset, "source": source, "seed": int(seed), "cases": int(cases),
                      "frames_per_case": int(frames_per_case), "image_size": image_size, "records": str(records),
                      "knobs": settings["knobs"]}
        results[role] = {name: summarize_rows(found) for name, found in rows.items()}
        frames[role] = rows
    result = {
        "format": FORMAT, "package_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": model.description, "kind": model.kind, "tasks": list(model.tasks),
                  "training_data": (model.training or {}).get("data"),
                  "postprocess": describe_postprocess(postprocess)},
        "arc_gap_deg": float(arc_gap_deg),
        "test_sets": sets, "baselines": {"predict_nothing": {"available": True}, "rule": rule_info},
        "results": results, "run_test_cases": _run_test_cases(model), "frames": frames,
        "units": UNITS, "definitions": DEFINITIONS, "targets": TARGETS,
    }
    written = write_report(out_dir, result)
    log(format_table(result))
    log(f"written: {', '.join(str(p) for p in written)}")
    return result
