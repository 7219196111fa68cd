"""Table 1's calcium scores split by the empty-mask rule: how much of each mean comes from frames where one mask
is empty.

A test frame where exactly one of prediction and ground truth has calcium (a missed or an invented calcification)
scores Dice 0 and, under the default rule (`ivus_tf.metrics`, `empty="diagonal"`), an average Hausdorff distance
equal to the image diagonal (14.5 mm for a 10.24 mm field of view). A few such frames dominate a mean distance of
otherwise sub-millimetre contours, so Table 1's distance column mixes two things: how often calcium is missed or
invented, and how far the contours are when both exist. This table separates them, per model and training scheme
(the same runs as Table 1), from each run's metrics.json (per test frame):

* `one mask empty [%]`: the share of calcium test frames with exactly one empty mask;
* `Dice, both present [%]` and `average Hausdorff, both present [mm]`: means over the frames where both masks
  have calcium;
* `median average Hausdorff [mm]`: the median over all calcium test frames (robust to the diagonal scores);
each as mean ± SD over the runs. The rule itself is unchanged (it is the documented metric); this is a reading aid.
When the run folders hold the calcium rule baseline (metrics.json `calcium.rule_baseline`), a last row gives the
same for the rule, one value per repeat x fold (every run of a fold shares the rule's fit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.grid.results import resolve_run_dir
from ivus_tf.report.stats import describe
from ivus_tf.run_folder import RunFolder

__all__ = ["COLUMNS", "empty_frame_rows", "rule_frame_row", "run_frame_summary", "write_empty_frames"]

ONE_EMPTY = ("pred_empty", "target_empty")
COLUMNS = (("one_empty", "One mask empty [%]", 100.0, 1), ("dice_both", "Dice, both present [%]", 100.0, 1),
           ("ahd_both", "Average Hausdorff, both present [mm]", 1.0, 2),
           ("ahd_median", "Median average Hausdorff [mm]", 1.0, 2))


def run_frame_summary(frames: Sequence[Mapping]) -> dict:
    """{"one_empty", "dice_both", "ahd_both", "ahd_median", "frames"} of one run's calcium test frames (NaN where a
    quantity has no frame)."""
    both = [f for f in frames if f["empty_case"] == "both_present"]
    distances = [f["average_hausdorff_mm"] for f in frames if _finite(f["average_hausdorff_mm"])]
    return {"one_empty": sum(f["empty_case"] in ONE_EMPTY for f in frames) / len(frames) if frames else math.nan,
            "dice_both": _mean([f["dice"] for f in both]),
            "ahd_both": _mean([f["average_hausdorff_mm"] for f in both]),
            "ahd_median": float(np.median(distances)) if distances else math.nan, "frames": len(frames)}


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _mean(values) -> float:
    values = [v for v in values if _finite(v)]
    return float(np.mean(values)) if values else math.nan


def empty_frame_rows(table_rows: Sequence[Mapping], records: Sequence[Mapping], results_path: str | Path
                     ) -> tuple[list[dict], list[str]]:
    """One row per Table 1 row (same runs): the COLUMNS as mean/std/n over runs. Also the run ids whose
    metrics.json could not be read (left out)."""
    rows, missing = [], []
    for table_row in table_rows:
        runs = [r for r in records if r["arch"] == table_row["arch"] and r["backbone"] == table_row["backbone"]
                and r["scheme"] == table_row["scheme"] and (r["scheme"] != "multitask" or r["lam"] == table_row["lam"])]
        summaries = []
        for run in runs:
            try:
                frames = RunFolder(resolve_run_dir(run, results_path)).read_metrics()["calcium"]["frames"]
            except (InputError, KeyError, TypeError):
                missing.append(run["run_id"])
                continue
            summaries.append(run_frame_summary(frames))
        row = {key: table_row[key] for key in ("model", "scheme_label", "lam")}
        row["runs"] = len(summaries)
        for key, *_ in COLUMNS:
            row.update({f"{key}_{k}": v for k, v in describe([s[key] for s in summaries if _finite(s[key])]).items()})
        rows.append(row)
    return rows, missing


def rule_frame_row(records: Sequence[Mapping], results_path: str | Path) -> dict | None:
    """The rule baseline's row (COLUMNS as mean/std/n over folds) from the first run folder of each (repeat, fold)
    whose metrics.json holds `calcium.rule_baseline`; None when none does."""
    summaries = {}
    for run in records:
        fold = (run["repeat"], run["fold"])
        if fold in summaries:
            continue
        try:
            metrics = RunFolder(resolve_run_dir(run, results_path)).read_metrics()
            frames = metrics["calcium"]["rule_baseline"]["frames"]
        except (InputError, KeyError, TypeError):
            continue
        summaries[fold] = run_frame_summary(frames)
    if not summaries:
        return None
    row = {"model": "Baselines", "scheme_label": "rule: bright edge + shadow", "lam": None, "runs": len(summaries),
           "folds": True}
    for key, *_ in COLUMNS:
        values = [s[key] for s in summaries.values() if _finite(s[key])]
        row.update({f"{key}_{k}": v for k, v in describe(values).items()})
    return row


def _cell(row: Mapping, key: str, scale: float, digits: int) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if math.isnan(mean):
        return "n/a"
    return f"{mean * scale:.{digits}f}" + ("" if math.isnan(std) else f" ± {std * scale:.{digits}f}")


def write_empty_frames(table_rows: Sequence[Mapping], records: Sequence[Mapping], results_path: str | Path,
                       path: str | Path) -> dict:
    """Write the breakdown (module docstring) as Markdown to `path`; return {"rows", "missing"}."""
    rows, missing = empty_frame_rows(table_rows, records, results_path)
    rule = rule_frame_row(records, results_path)
    if rule is not None:
        rows.append(rule)
    header = ["Model", "Training", "λ", *(label for _, label, *_ in COLUMNS), "Runs"]
    lines = ["# Calcium scores by the empty-mask rule", "", "| " + " | ".join(header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    previous = None
    for row in rows:
        model = row["model"] if row["model"] != previous else ""
        previous = row["model"]
        lam = "–" if row["lam"] is None else f"{row['lam']:g}"
        cells = [_cell(row, key, scale, digits) for key, _, scale, digits in COLUMNS]
        runs = f"{row['runs']} folds" if row.get("folds") else str(row["runs"])
        lines.append("| " + " | ".join([model, row["scheme_label"], lam, *cells, runs]) + " |")
    lines += ["", "Same runs as Table 1; mean ± sample SD over runs of each run's value over its calcium test "
              "frames. One mask empty: a missed or an invented calcification, scored Dice 0 and average Hausdorff = "
              "the image diagonal by the metric's rule; these frames dominate Table 1's mean distance. Both "
              "present: frames where prediction and ground truth both have calcium. Median: over all calcium "
              "test frames."]
    if rule is not None:
        lines[-1] += (" Rule: the calcium rule baseline fitted on each fold's training cases, one value per repeat × "
                      "fold.")
    if missing:
        lines += ["", f"Left out (no readable metrics.json in the run folder): {', '.join(missing)}."]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"rows": rows, "missing": missing}
