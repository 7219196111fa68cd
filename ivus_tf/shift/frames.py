"""Scoring one predictor on frames that carry both labels: segmentation per frame, calcium arc agreement over frames.

Pure numpy over original-resolution masks (no TensorFlow), with the package's definitions:
- calcium Dice and average Hausdorff distance in mm: `ivus_tf.metrics.evaluate_frame` with its empty-mask rules
  (both empty: Dice 1, distance 0; one empty: Dice 0, distance the image diagonal in mm);
- lumen (label 1) and vessel (EEM, labels 1 | 2) Dice and distance: `ivus_tf.metrics.wall_lumen_metrics`;
- calcium arc in degrees: `ivus_tf.measurements.frame_measurements`, the arc `predict` reports (angular gaps
  below `arc_gap_deg` between calcium at a similar depth bridged, so a calcification predicted in fragments
  measures as one), seen from the frame's own lumen (the predicted lumen for a prediction, the annotated one for
  the truth; the image centre, where the catheter is, for a predictor without a wall-lumen output). Prediction
  and truth are measured by the same function with the same gap.

Arc agreement (`arc_agreement`) compares predicted with true arcs over frames: Pearson r, mean absolute error and
mean signed error (bias) in degrees. r is undefined (NaN, null in JSON) when either side is constant, e.g. a
predictor that never finds calcium.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ivus_tf import metrics as M
from ivus_tf.measurements import DEFAULT_ARC_GAP_DEG, frame_measurements

__all__ = ["arc_agreement", "score_frame", "summarize_rows", "truth_arc_deg"]


def truth_arc_deg(frame: Mapping, arc_gap_deg: float = DEFAULT_ARC_GAP_DEG) -> float:
    """The annotated calcium arc of `frame` (a records frame with both masks), seen from the annotated lumen."""
    return float(frame_measurements(frame["calcium_mask"], frame["wall_lumen_mask"], frame["pixel_spacing_mm"],
                                     arc_gap_deg=arc_gap_deg)["calcium_arc_deg"])


def score_frame(prediction: Mapping, frame: Mapping, truth_arc: float,
                arc_gap_deg: float = DEFAULT_ARC_GAP_DEG) -> dict:
    """One row: ids, calcium Dice / distance / empty case / arc (prediction and truth), lumen and vessel Dice and
    distance. `prediction` = {"calcium": 0/1 mask or None, "wall_lumen": 0/1/2 labels or None} at the frame's size;
    None (a model without that head) leaves that task's keys out of the row."""
    spacing = frame["pixel_spacing_mm"]
    calcium, labels = prediction.get("calcium"), prediction.get("wall_lumen")
    row = {"case_id": frame["case_id"], "frame_id": frame["frame_id"], "truth_calcium_arc_deg": truth_arc,
           "truth_has_calcium": bool(np.any(frame["calcium_mask"]))}
    if calcium is not None:
        result = M.evaluate_frame(calcium, frame["calcium_mask"], spacing)
        measured = frame_measurements(calcium, labels, spacing, arc_gap_deg=arc_gap_deg)
        row.update(calcium_dice=result["dice"], calcium_average_hausdorff_mm=result["average_hausdorff_mm"],
                   calcium_empty_case=result["empty_case"], calcium_arc_deg=float(measured["calcium_arc_deg"]),
                   arc_center=measured["arc_center"])
    if labels is not None:
        result = M.wall_lumen_metrics(labels, frame["wall_lumen_mask"], spacing)
        for region in ("lumen", "vessel"):
            row[f"{region}_dice"] = result[region]["dice"]
            row[f"{region}_average_hausdorff_mm"] = result[region]["average_hausdorff_mm"]
    return row


def arc_agreement(predicted: Sequence[float], truth: Sequence[float]) -> dict:
    """{"frames", "pearson_r", "mean_absolute_error_deg", "bias_deg", "truth_mean_deg", "predicted_mean_deg"}.

    bias = mean(predicted - truth) (negative: under-measured). Pearson r is NaN for fewer than two frames or when
    either side does not vary; every mean is NaN without frames."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    n = int(predicted.size)
    result = {"frames": n, "pearson_r": math.nan, "mean_absolute_error_deg": math.nan, "bias_deg": math.nan,
              "truth_mean_deg": math.nan, "predicted_mean_deg": math.nan}
    if n == 0:
        return result
    result.update(mean_absolute_error_deg=float(np.mean(np.abs(predicted - truth))),
                  bias_deg=float(np.mean(predicted - truth)), truth_mean_deg=float(truth.mean()),
                  predicted_mean_deg=float(predicted.mean()))
    dp, dt = predicted - predicted.mean(), truth - truth.mean()
    denominator = math.sqrt(float(np.sum(dp * dp)) * float(np.sum(dt * dt)))
    if n > 1 and denominator > 0:
        result["pearson_r"] = float(np.sum(dp * dt)) / denominator
    return result


def _section(rows: Sequence[Mapping], prefix: str) -> dict | None:
    """`summarize_frames` of one task's columns, or None when the predictor has no such output."""
    if not rows or f"{prefix}_dice" not in rows[0]:
        return None
    return M.summarize_frames({"dice": r[f"{prefix}_dice"],
                               "average_hausdorff_mm": r[f"{prefix}_average_hausdorff_mm"],
                               **({"empty_case": r["calcium_empty_case"]} if prefix == "calcium" else {})}
                              for r in rows)


def summarize_rows(rows: Iterable[Mapping]) -> dict:
    """Summary of `score_frame` rows: frame counts, calcium / lumen / vessel `summarize_frames` (None for a missing
    output) and the calcium arc agreement over all frames and over the frames with calcium in the truth."""
    rows = list(rows)
    with_calcium = [r for r in rows if r["truth_has_calcium"]]
    summary = {"frames": len(rows), "frames_with_calcium": len(with_calcium),
               **{task: _section(rows, task) for task in ("calcium", "lumen", "vessel")}, "calcium_arc": None}
    if rows and "calcium_arc_deg" in rows[0]:
        summary["calcium_arc"] = {
            name: arc_agreement([r["calcium_arc_deg"] for r in subset], [r["truth_calcium_arc_deg"] for r in subset])
            for name, subset in (("all_frames", rows), ("frames_with_calcium", with_calcium))}
    return summary
