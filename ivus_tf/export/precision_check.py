"""Is a reduced precision as good as fp32? Per-frame Dice of both on the run's test cases, through the export.

    check = measure_precision(version_dir, "int8", records_dir, test_cases, image_size=128,
                              postprocess=PRESETS["default"])
    check["calcium_dice_change_points"]     # 100 * (mean Dice reduced - mean Dice fp32), cleaned masks
    check["frames"]["calcium"]              # per frame: case, frame, Dice fp32, Dice reduced

Both precisions run the EXPORT (the serving graph with its resizes, on the engine each precision uses: fp32 on
that same engine) inside `ivus_tf.evaluation.evaluate_model`, so they are scored exactly as training runs are:
frames resized to the model size as the eval pipeline does (the export's own resize then maps S x S to itself,
an identity), probabilities resized back to each frame's original size, argmax, Dice at original resolution,
with the run's mask cleaning (the headline) and without it ("raw"). Also recorded: the largest |P(reduced) -
P(fp32)| of any probability at model resolution, the share of pixels whose label is the same, and for calcium the
frames whose detection flipped (empty <-> not): with the empty-mask rule one such frame moves the mean Dice by
100/N points, so on a small test set the change is dominated by borderline frames (see docs/precision.md).

The decision (`ivus_tf.export.precision.offered`): the calcium Dice change of raw and of cleaned masks both
within 0.5 points (for a model without a calcium head: every lumen and vessel Dice change).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.export.precision import MAX_DICE_CHANGE_POINTS, offered

REGIONS = {"calcium": ("calcium",), "wall_lumen": ("lumen", "vessel")}


class AtModelSize:
    """`evaluate_model`'s model interface over a loaded export: images [B, S, S, 1] in [0, 1] (uint8 / 255) ->
    {task: softmax [B, S, S, classes]}. With `reference` (the fp32 export), each batch is also run there and the
    largest probability difference and the label agreement are accumulated."""

    def __init__(self, model, tasks: Sequence[str], reference=None):
        self.model, self.tasks, self.reference = model, tuple(tasks), reference
        self.max_abs_difference, self.same_labels, self.pixels = 0.0, {t: 0 for t in tasks}, 0

    def _probabilities(self, model, frames) -> dict:
        outputs = model.predict(frames, batch_size=len(frames))
        result = {}
        if "calcium" in self.tasks:
            p = np.asarray(outputs["calcium_probability"], np.float32)
            result["calcium"] = np.stack([1.0 - p, p], axis=-1)
        if "wall_lumen" in self.tasks:
            result["wall_lumen"] = np.asarray(outputs["wall_lumen_probability"], np.float32)
        return result

    def predict_on_batch(self, images) -> dict:
        frames = np.clip(np.round(np.asarray(images)[..., 0] * 255.0), 0, 255).astype(np.uint8)
        result = self._probabilities(self.model, frames)
        if self.reference is not None:
            expected = self._probabilities(self.reference, frames)
            for task in self.tasks:
                self.max_abs_difference = max(self.max_abs_difference,
                                              float(np.max(np.abs(result[task] - expected[task]))))
                self.same_labels[task] += int(np.sum(np.argmax(result[task], -1) == np.argmax(expected[task], -1)))
            self.pixels += frames.size
        return result


def _section(metrics: dict, region: str, raw: bool = False) -> dict | None:
    return ((metrics.get("raw") or metrics) if raw else metrics).get(region)


def _mean_dice(metrics: dict, region: str, raw: bool = False) -> float:
    section = _section(metrics, region, raw)
    return math.nan if section is None else float(section["summary"]["dice"]["mean"])


def _flips(full: dict, reduced: dict) -> dict:
    """Frames whose prediction went from empty to not (or back): each moves the mean Dice by 1/N alone (Dice 1 of
    two empty masks vs 0 of a false alarm), so a test set of N frames resolves changes only in steps of 100/N points
    there. Also the change over the other frames."""
    pairs = list(zip(full["frames"], reduced["frames"]))
    flipped = [(a, b) for a, b in pairs if a["empty_case"] != b["empty_case"]]
    kept = [(a["dice"], b["dice"]) for a, b in pairs if a["empty_case"] == b["empty_case"]]
    return {"frames": len(pairs), "detection_flips": len(flipped),
            "flipped": [f"{a['case_id']}/{a['frame_id']} {a['empty_case']} -> {b['empty_case']}" for a, b in flipped],
            "change_points_other_frames": (100.0 * float(np.mean([b - a for a, b in kept])) if kept else math.nan)}


def _points(reduced: float, full: float) -> float:
    return 100.0 * (reduced - full)


def measure_precision(version_dir: str | Path, precision: str, records_dir: str | Path, test_cases: Sequence[str],
                      image_size: int, postprocess=None, batch_size: int = 8, fp32_model=None,
                      reduced_model=None) -> dict:
    """Score fp32 and `precision` on `test_cases` (module docstring); return the record kept in the export."""
    from ivus_tf.evaluation import evaluate_model
    from ivus_tf.export.loader import load_exported

    if not test_cases:
        raise InputError(f"{records_dir}: no test cases to check {precision} on")
    reduced = reduced_model or load_exported(version_dir, precision=precision)
    full = fp32_model or load_exported(version_dir, engine=reduced.engine, precision="fp32")
    tasks = tuple(reduced.tasks)
    from tfrecords_builder.index import read_index

    carried = {t for c in test_cases for t in read_index(records_dir)["cases"][c]["tasks"]}
    tasks = tuple(t for t in tasks if t in carried)
    if not tasks:
        raise InputError(f"{records_dir}: the test cases carry none of the model's tasks")
    paired = AtModelSize(full, tasks, reference=reduced)  # fp32 scored; the reduced pass compared batch by batch
    metrics_full = evaluate_model(paired, records_dir, test_cases, tasks, image_size, batch_size=batch_size,
                                  postprocess=postprocess)
    metrics_reduced = evaluate_model(AtModelSize(reduced, tasks), records_dir, test_cases, tasks, image_size,
                                     batch_size=batch_size, postprocess=postprocess)
    cleaned = metrics_full["postprocess"]["headline"] == "postprocessed"
    summary, frames = {}, {}
    for task in tasks:
        for region in REGIONS[task]:
            for kind in (("cleaned", "raw") if cleaned else ("raw",)):
                full_dice = _mean_dice(metrics_full, region, raw=kind == "raw" and cleaned)
                reduced_dice = _mean_dice(metrics_reduced, region, raw=kind == "raw" and cleaned)
                summary[f"{region}_dice_{kind}"] = {"fp32": full_dice, precision: reduced_dice,
                                                    "change_points": _points(reduced_dice, full_dice)}
                if region == "calcium":
                    raw = kind == "raw" and cleaned
                    summary[f"{region}_dice_{kind}"].update(_flips(_section(metrics_full, region, raw),
                                                                   _section(metrics_reduced, region, raw)))
            pairs = zip(metrics_full[region]["frames"], metrics_reduced[region]["frames"])
            frames[region] = [{"case_id": a["case_id"], "frame_id": a["frame_id"], "dice_fp32": a["dice"],
                               f"dice_{precision}": b["dice"]} for a, b in pairs]
    headline = "cleaned" if cleaned else "raw"
    decisive = "calcium" if "calcium" in tasks else None  # a wall-lumen model: its lumen and vessel decide
    changes = [entry["change_points"] for key, entry in summary.items()  # the stated rule: the whole mean
               if decisive is None or key.startswith(f"{decisive}_")]
    return {
        "engine": reduced.engine, "test_cases": list(test_cases), "records": str(records_dir),
        "frames_scored": {region: len(rows) for region, rows in frames.items()},
        "calcium_dice_change_points": (summary[f"calcium_dice_{headline}"]["change_points"]
                                       if f"calcium_dice_{headline}" in summary else math.nan),
        "limit_points": MAX_DICE_CHANGE_POINTS, "offered": offered(changes), "dice": summary,
        "masks": "cleaned (the run's postprocess preset) and raw argmax" if cleaned else "raw argmax",
        "max_abs_probability_difference": paired.max_abs_difference,
        "same_label_fraction": {t: paired.same_labels[t] / max(paired.pixels, 1) for t in tasks},
        "per_frame": frames,
    }
