"""Segmentation metrics of Bargsten et al. (CDBME 2021): Dice and average Hausdorff distance in millimetres.

Pure functions over 2-D numpy masks plus the frame's pixel spacing (mm per pixel at the frame's original
resolution); no TensorFlow. Masks may be bool, integer (nonzero = foreground) or float with values exactly 0 and 1.
The average Hausdorff distance is the modified Hausdorff distance of Dubuisson & Jain (1994): the maximum of the
two directed mean distances, computed exactly with distance transforms (`_distances_to_mm`), over every foreground
pixel (`points="all"`) or the 4-neighbour contours (`"boundary"`). Empty masks follow an explicit rule (both
empty: Dice 1, distance 0; one empty: Dice 0, distance = the image diagonal, or NaN with `empty="nan"`), reported
per frame (`empty_case`) and counted by `summarize_frames`. Definitions and reasons: docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
from scipy import ndimage

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import WALL_LUMEN_LABELS, check_wall_lumen_labels

__all__ = [
    "EMPTY_CASES", "EMPTY_RULES", "POINT_SETS",
    "as_mask", "average_hausdorff_mm", "boundary", "dice", "directed_mean_distances_mm", "empty_case",
    "evaluate_frame", "image_diagonal_mm", "summarize_frames", "summarize_wall_lumen", "validate_pixel_spacing_mm",
    "wall_lumen_metrics",
]

EMPTY_CASES = ("both_present", "both_empty", "pred_empty", "target_empty")
EMPTY_RULES = ("diagonal", "nan")
POINT_SETS = ("all", "boundary")

_CROSS = ndimage.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------------------------- input checks

def as_mask(mask, name: str = "mask") -> np.ndarray:
    """`mask` as a 2-D bool array (nonzero = foreground); ValueError for other ranks or non-binary floats."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2-D mask, got shape {array.shape}")
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return array != 0
    if np.issubdtype(array.dtype, np.floating):
        foreground = array != 0
        if not np.all(foreground == (array == 1)):
            raise InputError(f"{name} is a float array with values other than 0 and 1; threshold it first")
        return foreground
    raise InputError(f"{name} must be a bool, integer or 0/1 float array, got dtype {array.dtype}")


def _mask_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred, target = as_mask(pred, "pred"), as_mask(target, "target")
    if pred.shape != target.shape:
        raise InputError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    return pred, target


def validate_pixel_spacing_mm(pixel_spacing_mm) -> tuple[float, float]:
    """(row, column) spacing in mm from a scalar or a pair; ValueError unless finite and > 0."""
    try:
        spacing = np.asarray(pixel_spacing_mm, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"pixel_spacing_mm must be a number or a (row, column) pair, got {pixel_spacing_mm!r}") from None
    if spacing.ndim == 0:
        spacing = np.repeat(spacing, 2)
    if spacing.shape != (2,):
        raise InputError(f"pixel_spacing_mm must be a number or a (row, column) pair, got {pixel_spacing_mm!r}")
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise InputError(f"pixel_spacing_mm must be finite and > 0, got {pixel_spacing_mm!r}")
    return float(spacing[0]), float(spacing[1])


def _check_choice(value: str, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# ------------------------------------------------------------------------------------------- single metrics

def dice(pred, target) -> float:
    """Dice coefficient 2|A & B| / (|A| + |B|) of two binary masks; 1.0 when both are empty."""
    pred, target = _mask_pair(pred, target)
    return _dice(pred, target)


def _dice(pred: np.ndarray, target: np.ndarray) -> float:
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(target))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & target)) / total


def empty_case(pred, target) -> str:
    """Which empty-mask rule applies: "both_present", "both_empty", "pred_empty" or "target_empty"."""
    pred, target = _mask_pair(pred, target)
    return _empty_case(pred.any(), target.any())


def _empty_case(pred_any: bool, target_any: bool) -> str:
    if pred_any and target_any:
        return "both_present"
    if not pred_any and not target_any:
        return "both_empty"
    return "pred_empty" if not pred_any else "target_empty"


def boundary(mask) -> np.ndarray:
    """Contour pixels: foreground pixels with at least one 4-neighbour in the background or outside the image."""
    mask = as_mask(mask)
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def image_diagonal_mm(shape: Sequence[int], pixel_spacing_mm) -> float:
    """Diagonal of the imaged field, sqrt((rows * dy)^2 + (cols * dx)^2) in mm: the one-empty-mask distance."""
    dy, dx = validate_pixel_spacing_mm(pixel_spacing_mm)
    return math.hypot(shape[0] * dy, shape[1] * dx)


def directed_mean_distances_mm(pred, target, pixel_spacing_mm, *, points: str = "all") -> tuple[float, float]:
    """(d(pred, target), d(target, pred)) in mm for two non-empty masks; see docs/metrics.md."""
    pred, target = _mask_pair(pred, target)
    spacing = validate_pixel_spacing_mm(pixel_spacing_mm)
    _check_choice(points, "points", POINT_SETS)
    if not (pred.any() and target.any()):
        raise InputError("directed_mean_distances_mm needs two non-empty masks; use average_hausdorff_mm")
    return _directed_mean_distances_mm(pred, target, spacing, points)


def _directed_mean_distances_mm(pred, target, spacing, points) -> tuple[float, float]:
    # Cropping to the bounding box of pred | target is exact: every point of either set lies inside it, the
    # distance transform measures true Euclidean distances to the zeros inside the crop, and, for contours, a
    # pixel on the crop's edge has its outside neighbour outside both masks, so border_value=0 still holds.
    union = pred | target
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    pred, target = pred[box], target[box]
    if points == "boundary":
        pred = pred & ~ndimage.binary_erosion(pred, structure=_CROSS, border_value=0)
        target = target & ~ndimage.binary_erosion(target, structure=_CROSS, border_value=0)
    return (float(_distances_to_mm(target, pred, spacing).mean()),
            float(_distances_to_mm(pred, target, spacing).mean()))


# OpenCV's exact (Felzenszwalb) transform returns float32 distances; squared, they are within a few float32 ulps of
# the true squared pixel distance, an integer, so rounding recovers it exactly while it stays below 2**20 (the
# float32 error there is under 0.2, the rounding margin 0.5; tests/test_metrics.py checks both of OpenCV's code
# paths against scipy's transform). Larger crops and anisotropic spacing take scipy's transform, about 4x slower.
_OPENCV_MAX_SQUARED_PX = 2**20


def _distances_to_mm(target: np.ndarray, at: np.ndarray, spacing) -> np.ndarray:
    """Distance in mm from each pixel of `at` (C order) to the nearest pixel of the non-empty mask `target`."""
    (dy, dx), (height, width) = spacing, target.shape
    if dy == dx and height**2 + width**2 <= _OPENCV_MAX_SQUARED_PX:
        return _distances_opencv_mm(target, at, dy)
    return _distances_scipy_mm(target, at, spacing)


def _distances_opencv_mm(target: np.ndarray, at: np.ndarray, pixel_spacing_mm: float) -> np.ndarray:
    outside = np.ascontiguousarray(~target).view(np.uint8)
    distance_px = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[at].astype(np.float64)
    return np.sqrt(np.rint(distance_px * distance_px)) * pixel_spacing_mm


def _distances_scipy_mm(target: np.ndarray, at: np.ndarray, spacing) -> np.ndarray:
    return ndimage.distance_transform_edt(~target, sampling=spacing)[at]


def average_hausdorff_mm(pred, target, pixel_spacing_mm, *, points: str = "all", empty: str = "diagonal") -> float:
    """Modified Hausdorff distance of Dubuisson & Jain (1994) in mm, max(d(A, B), d(B, A)).

    points: "all" foreground pixels or their "boundary" (4-neighbour rule, see `boundary`).
    empty: one empty mask gives the image diagonal in mm ("diagonal") or NaN ("nan"); both empty give 0.
    """
    pred, target = _mask_pair(pred, target)
    spacing = validate_pixel_spacing_mm(pixel_spacing_mm)
    _check_choice(points, "points", POINT_SETS)
    _check_choice(empty, "empty", EMPTY_RULES)
    return _average_hausdorff_mm(pred, target, spacing, points, empty, _empty_case(pred.any(), target.any()))


def _average_hausdorff_mm(pred, target, spacing, points, empty, case) -> float:
    if case == "both_empty":
        return 0.0
    if case != "both_present":
        return image_diagonal_mm(pred.shape, spacing) if empty == "diagonal" else math.nan
    return max(_directed_mean_distances_mm(pred, target, spacing, points))


# ---------------------------------------------------------------------------------------- frames and regions

def evaluate_frame(pred, target, pixel_spacing_mm, *, points: str = "all", empty: str = "diagonal") -> dict:
    """{"dice", "average_hausdorff_mm", "empty_case"} of one binary mask pair (calcium, or one region)."""
    pred, target = _mask_pair(pred, target)
    spacing = validate_pixel_spacing_mm(pixel_spacing_mm)
    _check_choice(points, "points", POINT_SETS)
    _check_choice(empty, "empty", EMPTY_RULES)
    return _evaluate(pred, target, spacing, points, empty)


def _evaluate(pred, target, spacing, points, empty) -> dict:
    case = _empty_case(pred.any(), target.any())
    return {"dice": _dice(pred, target),
            "average_hausdorff_mm": _average_hausdorff_mm(pred, target, spacing, points, empty, case),
            "empty_case": case}


def wall_lumen_metrics(pred_labels, target_labels, pixel_spacing_mm, *, points: str = "all",
                       empty: str = "diagonal") -> dict:
    """Per-region metrics of a wall-lumen label map pair (0 background, 1 lumen, 2 vessel wall).

    Returns {"lumen": ..., "vessel_wall": ..., "vessel": ..., "mean": ...}: the first three are `evaluate_frame`
    dicts ("vessel" is the area inside the external elastic membrane, labels 1 | 2, what IVUS measures as vessel
    area); "mean" holds the mean Dice and mean distance of lumen and vessel wall, as in the paper's Figure 4
    (not including "vessel"; NaN if either region's distance is NaN).
    """
    pred = check_wall_lumen_labels(pred_labels, "pred_labels")
    target = check_wall_lumen_labels(target_labels, "target_labels")
    if pred.shape != target.shape:
        raise InputError(f"pred_labels and target_labels shapes differ: {pred.shape} vs {target.shape}")
    spacing = validate_pixel_spacing_mm(pixel_spacing_mm)
    _check_choice(points, "points", POINT_SETS)
    _check_choice(empty, "empty", EMPTY_RULES)
    result = {region: _evaluate(pred == label, target == label, spacing, points, empty)
              for region, label in WALL_LUMEN_LABELS.items()}
    result["vessel"] = _evaluate(pred != 0, target != 0, spacing, points, empty)
    result["mean"] = {key: (result["lumen"][key] + result["vessel_wall"][key]) / 2
                      for key in ("dice", "average_hausdorff_mm")}
    return result


# -------------------------------------------------------------------------------------------- aggregation

def _stats(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    n = int(finite.size)
    return {"mean": float(finite.mean()) if n else math.nan,
            "std": float(finite.std(ddof=1)) if n > 1 else math.nan,
            "median": float(np.median(finite)) if n else math.nan,
            "n": n, "n_nan": int(values.size - n)}


def summarize_frames(results: Iterable[Mapping]) -> dict:
    """Summary of per-frame results (dicts of `evaluate_frame`, or "mean" entries of `wall_lumen_metrics`).

    Returns {"frames": N, "empty_cases": {case: count} (when the results carry "empty_case"), and for each metric
    {"mean", "std", "median", "n", "n_nan"}}. std is the sample standard deviation (ddof=1; NaN for fewer than two
    values). NaN values (from `empty="nan"`) are left out of the statistics and counted in "n_nan", so excluded
    frames stay visible.
    """
    results = list(results)
    summary: dict = {"frames": len(results)}
    if results and all("empty_case" in r for r in results):
        summary["empty_cases"] = {case: sum(r["empty_case"] == case for r in results) for case in EMPTY_CASES}
    for metric in ("dice", "average_hausdorff_mm"):
        summary[metric] = _stats([r[metric] for r in results])
    return summary


def summarize_wall_lumen(results: Iterable[Mapping]) -> dict:
    """`summarize_frames` of each region ("lumen", "vessel_wall", "vessel", "mean") of `wall_lumen_metrics` dicts."""
    results = list(results)
    return {region: summarize_frames(r[region] for r in results)
            for region in ("lumen", "vessel_wall", "vessel", "mean")}
