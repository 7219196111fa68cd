"""Ensembles and test-time augmentation (TTA) for predict: average the probabilities of several passes.

    model = Ensemble([load_exported(a), load_exported(b), load_exported(c)], paths=[a, b, c], tta=True)
    outputs = model.predict(frames)        # uint8 [N, H, W] -> the export's outputs, averaged, plus uncertainty

A pass is one member model (an export loaded by `ivus_tf.export.load_exported`, on ONNX Runtime or TensorFlow:
ensembling sits above the engine) run on the frames as they are or flipped. With `tta`, every member also runs
on the frames flipped horizontally (left-right), vertically (up-down) and both, and its probabilities are
flipped back before averaging: a scan-converted IVUS frame is centred on the catheter and has no preferred
orientation, so a mirrored frame is another valid view of the same anatomy (nnU-Net's test-time mirroring). The
serving graph's resizes (bilinear, half-pixel centres) commute with flips, so each pass sees exactly the
mirrored input.

Per task, over the K = members x flips passes (population statistics, float64 sums):
    calcium_probability      mean P(calcium);  calcium_mask = mean P(calcium) > 0.5 (argmax of the two means)
    wall_lumen_probability   mean of the three class probabilities;  wall_lumen_labels = their argmax
    calcium_uncertainty      standard deviation of P(calcium) across the passes, per pixel
    wall_lumen_uncertainty   the largest, over the three classes, of the standard deviation of P(class)
    <task>_uncertainty_mean  per frame: the mean of that map over the pixels that at least one pass labels as
                             calcium (resp. lumen or wall); 0 when no pass does
A probability lies in [0, 1], so a standard deviation is at most 0.5 (half the passes say 0, half say 1).
`uncertainty_png` stores a map as a 16-bit PNG with 65535 = 0.5: std = value / 131070.

One member and no TTA is one pass: the member's own outputs come back unchanged (its masks included).
Cost: K forward passes per frame, K times the time of one model; memory: the accumulators of one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.export.layout import PROBABILITY_OUTPUTS

__all__ = ["FLIPS", "UNCERTAINTY_FULL_SCALE", "Ensemble", "add_ensemble_arguments", "ensemble_summary_lines",
           "model_text", "uncertainty_png"]

FLIPS = {"none": (), "horizontal": (2,), "vertical": (1,), "both": (1, 2)}  # mirrored axes of [N, H, W] frames
UNCERTAINTY_FULL_SCALE = 0.5  # the largest standard deviation of values in [0, 1]
UNCERTAINTY_PNG_MAX = 65535


def uncertainty_png(std: np.ndarray) -> np.ndarray:
    """uint16 image of a standard-deviation map: round(std / 0.5 * 65535), so std = value / 131070."""
    scaled = np.clip(np.asarray(std, np.float64), 0.0, UNCERTAINTY_FULL_SCALE) / UNCERTAINTY_FULL_SCALE
    return np.round(scaled * UNCERTAINTY_PNG_MAX).astype(np.uint16)


def _flip(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(array, axis=axes) if axes else array


class Ensemble:
    """Several loaded exports (same tasks, same model input size) and optional flips, behind one `predict`.

    Looks like an `ExportedModel` to `ivus_tf.predict`: `tasks`, `engine`, `providers`, `info`, `path`,
    `predict(frames, batch_size)`.
    """

    def __init__(self, members: Sequence, paths: Sequence[str | Path] | None = None, tta: bool = False):
        if not members:
            raise InputError("an ensemble needs at least one model")
        paths = [str(p) for p in (paths or [getattr(m, "path", f"model {i + 1}") for i, m in enumerate(members)])]
        first_tasks, first_size = tuple(members[0].tasks), getattr(members[0], "model_input_size", None)
        for member, path in zip(members[1:], paths[1:]):
            if tuple(member.tasks) != first_tasks:
                raise InputError(f"{path}: tasks {list(member.tasks)} differ from {paths[0]}'s {list(first_tasks)}; "
                                 "the models of an ensemble must have the same tasks")
            size = getattr(member, "model_input_size", None)
            if size != first_size:
                raise InputError(f"{path}: model input size {list(size or ())} differs from {paths[0]}'s "
                                 f"{list(first_size or ())}; the models of an ensemble must be trained alike")
        self.members, self.paths, self.tta = list(members), paths, bool(tta)
        self.flips = list(FLIPS) if self.tta else ["none"]
        self.tasks = first_tasks
        self.model_input_size = first_size
        engines = list(dict.fromkeys(m.engine for m in self.members))
        self.engine = "+".join(engines)
        self.providers = tuple(dict.fromkeys(p for m in self.members for p in getattr(m, "providers", ()) or ()))
        self.path = self.paths[0] if len(self.paths) == 1 else self.paths
        self.info = (getattr(self.members[0], "info", None) if len(self.members) == 1
                     else {"members": [getattr(m, "info", None) for m in self.members]})

    @property
    def passes(self) -> int:
        """Forward passes per frame: members x flips."""
        return len(self.members) * len(self.flips)

    def describe(self) -> dict:
        """For summary.json."""
        return {"models": list(self.paths), "engines": [m.engine for m in self.members],
                "tta": self.tta, "flips": self.flips, "forward_passes_per_frame": self.passes,
                "averaged": "softmax probabilities (mean over passes); masks from the mean",
                "uncertainty": None if self.passes == 1 else
                "population std of P(calcium) across passes (wall_lumen: the largest std over the three classes); "
                f"16-bit PNG, {UNCERTAINTY_PNG_MAX} = {UNCERTAINTY_FULL_SCALE}: std = value / "
                f"{UNCERTAINTY_PNG_MAX / UNCERTAINTY_FULL_SCALE:.0f}"}

    def _pass_outputs(self, member, path: str, frames: np.ndarray, axes, batch_size: int) -> dict:
        outputs = member.predict(np.ascontiguousarray(_flip(frames, axes)), batch_size=batch_size)
        result = {}
        for task in self.tasks:
            name = PROBABILITY_OUTPUTS[task]
            if name not in outputs:
                raise InputError(f"{path}: the model gave no {name!r} output, which ensembles and --tta average "
                                 f"(it gave {sorted(outputs)})")
            result[task] = _flip(np.asarray(outputs[name], np.float32), axes)
        return result

    def predict(self, frames, batch_size: int = 8) -> dict[str, np.ndarray]:
        """uint8 frames [N, H, W] -> the outputs of the module docstring (one pass: the member's own outputs)."""
        frames = np.asarray(frames)
        if self.passes == 1:
            return self.members[0].predict(frames, batch_size=batch_size)
        sums, squares, any_foreground = {}, {}, {}
        for member, path in zip(self.members, self.paths):
            for flip in self.flips:
                for task, probability in self._pass_outputs(member, path, frames, FLIPS[flip], batch_size).items():
                    p64 = probability.astype(np.float64)
                    foreground = (probability > 0.5 if task == "calcium"
                                  else np.argmax(probability, axis=-1) != 0)
                    if task not in sums:
                        sums[task], squares[task], any_foreground[task] = p64, p64 * p64, foreground
                    else:
                        sums[task] += p64
                        squares[task] += p64 * p64
                        any_foreground[task] |= foreground
        outputs = {}
        for task in self.tasks:
            mean = sums[task] / self.passes
            std = np.sqrt(np.maximum(squares[task] / self.passes - mean * mean, 0.0))
            if task == "calcium":
                outputs["calcium_probability"] = mean.astype(np.float32)
                outputs["calcium_mask"] = (mean > 0.5).astype(np.uint8)
            else:
                outputs["wall_lumen_probability"] = mean.astype(np.float32)
                outputs["wall_lumen_labels"] = np.argmax(mean, axis=-1).astype(np.uint8)
                std = std.max(axis=-1)
            outputs[f"{task}_uncertainty"] = std.astype(np.float32)
            region = any_foreground[task]
            counts = region.sum(axis=(1, 2))
            totals = np.where(region, std, 0.0).sum(axis=(1, 2))
            outputs[f"{task}_uncertainty_mean"] = np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)
        return outputs

    def __repr__(self) -> str:
        return f"Ensemble({len(self.members)} models, flips {self.flips}, tasks {list(self.tasks)})"


# ------------------------------------------------------------------------------------------ predict's options

def add_ensemble_arguments(parser) -> None:
    """predict's options for TTA, mask cleaning and arc bridging (`--model` itself is repeatable in predict)."""
    from ivus_tf.measurements import DEFAULT_ARC_GAP_DEG

    group = parser.add_argument_group("ensembles, TTA and clean masks (docs/ensembles.md)")
    group.add_argument("--tta", action="store_true",
                       help="test-time augmentation: also run every model on the frames mirrored horizontally, "
                            "vertically and both, and average (4x the forward passes)")
    group.add_argument("--postprocess", default="default", metavar="NAME|FILE.yaml",
                       help="mask cleaning (ivus_tf.postprocess): default (on), none, or a YAML file of "
                            "PostprocessConfig fields")
    group.add_argument("--no-postprocess", action="store_true", help="write the raw masks (= --postprocess none)")
    group.add_argument("--arc-gap-deg", type=float, default=DEFAULT_ARC_GAP_DEG, metavar="G",
                       help="bridge angular gaps below G degrees between calcium pieces at similar depth when "
                            "measuring the arc (default %(default)g; 0 = the exact union only)")


def model_text(paths, model) -> str:
    """The model(s) as one line: the export folder, or an ensemble's folders joined, with the TTA note."""
    text = " + ".join(paths) if isinstance(paths, list) else str(paths)
    return text + (" (with mirrored TTA)" if getattr(model, "tta", False) else "")


def ensemble_summary_lines(summary: dict) -> list[str]:
    """predict's console lines about the ensemble and the mask cleaning, from its summary.json dict."""
    lines = []
    ensemble, cleaning = summary.get("ensemble"), summary.get("postprocess") or {}
    if ensemble and ensemble["forward_passes_per_frame"] > 1:
        lines.append(f"ensemble: {len(ensemble['models'])} model(s) x {len(ensemble['flips'])} view(s) = "
                     f"{ensemble['forward_passes_per_frame']} forward passes per frame; uncertainty maps in masks/")
    if cleaning:
        lines.append(f"masks post-processed: {cleaning['preset'] if cleaning['enabled'] else 'no'}")
    return lines
