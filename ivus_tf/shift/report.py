"""shift.json and shift.md: every number of the shift test, and the table a reader looks at first.

shift.json (strict JSON, NaN as null):

    {"format": "ivus-tf shift test 1", "package_version", "created_utc",
     "model": {"path", "kind": "run_folder" | "keras" | "export", "tasks", "training_data", "postprocess"},
     "arc_gap_deg": the calcium arc's gap bridging (ivus_tf.measurements),
     "test_sets": {"in_distribution" | "shifted": {"preset", "source", "seed", "cases", "frames_per_case",
                                                   "image_size", "records", "knobs"}},
     "baselines": {"predict_nothing": {"available": true}, "rule": {"available", "reason" | fit details}},
     "results": {SET: {"model" | "model_raw" | "predict_nothing" | "rule": SUMMARY}},  # model_raw: uncleaned
     "run_test_cases": {"source", "cases", "calcium" | "lumen" | "vessel": {"frames", "dice",
                        "average_hausdorff_mm"}} or null,        # the run's own metrics.json, for reference
     "frames": {SET: {PREDICTOR: [ivus_tf.shift.frames.score_frame rows]}},
     "units": {...}, "definitions": {...}, "targets": {...}}

    SUMMARY = ivus_tf.shift.frames.summarize_rows: {"frames", "frames_with_calcium",
               "calcium" | "lumen" | "vessel": ivus_tf.metrics.summarize_frames (null without that output),
               "calcium_arc": {"all_frames" | "frames_with_calcium": ivus_tf.shift.frames.arc_agreement}}

shift.md: the table (metric | in-distribution | shifted | predict-nothing | rule | target; the two floors on the
shifted set, their in-distribution values are in shift.json) and what it was computed on.
shift_arcs.png: predicted against annotated arc per frame (`ivus_tf.shift.figure`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from ivus_tf.core.atomic import atomic_write_json, atomic_write_text

JSON_NAME, MARKDOWN_NAME = "shift.json", "shift.md"
# The bar for a model that carries over (issue 11, "Done when").
TARGETS = {"calcium_arc_pearson_r": 0.90, "lumen_dice": 0.85, "vessel_dice": 0.85}
UNITS = {"dice": "fraction 0-1", "average_hausdorff_mm": "mm", "calcium_arc_deg": "degrees",
         "mean_absolute_error_deg": "degrees", "bias_deg": "degrees (predicted - truth)", "pearson_r": "-1 to 1"}
DEFINITIONS = {
    "prediction": "the serving graph of ivus_tf.export (frames resized to the model input, probabilities resized "
                  "back to the frame's original size, argmax), as predict and ivus_tf.evaluation run models, "
                  "then cleaned by ivus_tf.postprocess (model.postprocess); model_raw: the same without cleaning",
    "calcium": "Dice and average Hausdorff distance (mm) per frame at original resolution, ivus_tf.metrics; empty "
               "masks: both empty Dice 1 / distance 0, one empty Dice 0 / the image diagonal in mm",
    "lumen, vessel": "Dice per frame of label 1 (lumen) and of labels 1|2 (inside the EEM)",
    "calcium_arc": "per frame, ivus_tf.measurements.frame_measurements' calcium_arc_deg of prediction and of truth "
                   "(gaps below arc_gap_deg bridged in both; each seen from its own lumen centroid; the image "
                   "centre for a predictor without a lumen, e.g. the rule); over frames: Pearson r, mean absolute "
                   "error and bias in degrees, over all "
                   "frames and over the frames with calcium in the truth",
    "predict_nothing": "all background: calcium Dice = share of calcium-free frames, arc 0 on every frame",
    "rule": "the calcium rule baseline (bright leading edge + acoustic shadow) fitted on the model's training "
            "cases; calcium only",
    "summary": "mean, sample std and median over frames (ivus_tf.metrics.summarize_frames)",
}

# (label, path into SUMMARY, format, target text)
ROWS = (
    ("calcium Dice", ("calcium", "dice", "mean"), ".3f", ""),
    ("calcium average Hausdorff (mm)", ("calcium", "average_hausdorff_mm", "mean"), ".2f", ""),
    ("lumen Dice", ("lumen", "dice", "mean"), ".3f", f">= {TARGETS['lumen_dice']:.2f}"),
    ("vessel (EEM) Dice", ("vessel", "dice", "mean"), ".3f", f">= {TARGETS['vessel_dice']:.2f}"),
    ("calcium arc r, all frames", ("calcium_arc", "all_frames", "pearson_r"), ".2f",
     f">= {TARGETS['calcium_arc_pearson_r']:.2f}"),
    ("calcium arc mean abs. error (deg), all frames", ("calcium_arc", "all_frames", "mean_absolute_error_deg"),
     ".1f", ""),
    ("calcium arc r, frames with calcium", ("calcium_arc", "frames_with_calcium", "pearson_r"), ".2f",
     f">= {TARGETS['calcium_arc_pearson_r']:.2f}"),
    ("calcium arc mean abs. error (deg), frames with calcium",
     ("calcium_arc", "frames_with_calcium", "mean_absolute_error_deg"), ".1f", ""),
    ("calcium arc bias (deg), frames with calcium", ("calcium_arc", "frames_with_calcium", "bias_deg"), "+.1f", ""),
)


def _get(summary: Mapping | None, path) -> float | None:
    for key in path:
        if not isinstance(summary, Mapping) or summary.get(key) is None:
            return None
        summary = summary[key]
    return summary


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def table_rows(result: Mapping) -> list[list[str]]:
    """[metric, in-distribution, shifted, predict-nothing, rule, target] per `ROWS` entry, as text."""
    results = result["results"]
    columns = [results["in_distribution"]["model"], results["shifted"]["model"],
               results["shifted"]["predict_nothing"], results["shifted"].get("rule")]
    return [[label, *(_cell(_get(c, path), fmt) for c in columns), target] for label, path, fmt, target in ROWS]


def format_table(result: Mapping) -> str:
    """The markdown table of shift.md (also what the CLI prints)."""
    sets = result["test_sets"]
    inside, shifted = sets["in_distribution"], sets["shifted"]
    header = ["metric", f"in-distribution ({inside['preset']})", f"shifted ({shifted['preset']})",
              "predict-nothing", "rule", "target"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    return "\n".join(lines)


def format_markdown(result: Mapping) -> str:
    """shift.md: what was tested, the table, and notes on the floors and the run's own test cases."""
    sets, results = result["test_sets"], result["results"]
    shifted, inside = sets["shifted"], sets["in_distribution"]
    counts = {role: results[role]["model"] for role in sets}
    lines = [
        f"# Shift test: {result['model']['path']}",
        "",
        f"ivus-tf {result['package_version']}, {result['created_utc']}. Test sets of {shifted['cases']} pullbacks x "
        f"{shifted['frames_per_case']} frames, seed {shifted['seed']}, both labels on every frame, scored at "
        "original resolution; the two sets image the same vessels.",
        f"- shifted: preset `{shifted['preset']}` ({shifted['source']}), {counts['shifted']['frames']} frames, "
        f"{counts['shifted']['frames_with_calcium']} with calcium",
        f"- in-distribution: preset `{inside['preset']}` ({inside['source']}), {counts['in_distribution']['frames']} "
        f"frames, {counts['in_distribution']['frames_with_calcium']} with calcium",
        "- predict-nothing and rule: the floors, on the shifted set",
        "",
        format_table(result),
        "",
    ]
    rule = result["baselines"]["rule"]
    if not rule.get("available"):
        lines.append(f"Rule baseline: not available ({rule.get('reason', 'unknown reason')}).")
    else:
        fitted = rule.get("fitted_on") or {}
        size = (f" ({fitted['frames']} calcium frames of {len(fitted['case_ids'])} pullbacks)"
                if "frames" in fitted and "case_ids" in fitted else "")
        lines.append(f"Rule baseline: {rule['source']}{size}; calcium only, its arc seen from the image centre.")
    inside_floors = [(name, results["in_distribution"].get(key)) for name, key in
                     (("predict-nothing", "predict_nothing"), ("rule", "rule"))]
    parts = [f"{name} calcium Dice {_cell(_get(s, ('calcium', 'dice', 'mean')), '.3f')}, arc r "
             f"{_cell(_get(s, ('calcium_arc', 'frames_with_calcium', 'pearson_r')), '.2f')} and mean abs. error "
             f"{_cell(_get(s, ('calcium_arc', 'frames_with_calcium', 'mean_absolute_error_deg')), '.1f')} deg "
             "(frames with calcium)" for name, s in inside_floors if s is not None]
    lines.append(f"The floors on the in-distribution set: {'; '.join(parts)}.")
    own = result.get("run_test_cases")
    if own:
        parts = [f"{name} Dice {_cell(own[name]['dice'], '.3f')}" for name in ("calcium", "lumen", "vessel")
                 if name in own]
        lines.append(f"The run's own test cases ({own['cases']} cases of its training phantom, metrics.json): "
                     f"{', '.join(parts)}.")
    lines.append("Definitions, per-frame values and the floors on the in-distribution set: shift.json; arcs per "
                 "frame: shift_arcs.png.")
    return "\n".join(lines) + "\n"


def write_report(out_dir, result: Mapping) -> list[Path]:
    """Write shift.json, shift.md and shift_arcs.png into `out_dir`, each atomically (complete or absent)."""
    from ivus_tf.shift.figure import write_arc_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [atomic_write_json(out_dir / JSON_NAME, result),
            atomic_write_text(out_dir / MARKDOWN_NAME, format_markdown(result)), write_arc_figure(out_dir, result)]
