"""Clinical IVUS measurements of one frame and of a pullback, from predicted (or annotated) masks.

Pure numpy functions over 2-D masks plus the pixel spacing (a number or a (row, column) pair), like
`ivus_tf.metrics`: per frame the calcium, lumen and vessel (EEM) areas, plaque burden and the calcium arc seen from
the lumen centroid (`arc_center` gives the fallbacks); per pullback the calcium length and longest runs, including
the calcium score's "> 270 degrees for >= 5 mm" (Zhang et al., Circ Cardiovasc Interv 2021). Definitions:
docs/metrics.md#clinical-measurements-ivus_tfmeasurements-used-by-python--m-ivus_tfpredict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from ivus_tf.core.errors import InputError, positive_number
from ivus_tf.core.vocab import LUMEN, VESSEL_WALL, check_wall_lumen_labels
from ivus_tf.metrics import as_mask, validate_pixel_spacing_mm

__all__ = [
    "ARC_CENTERS", "DEFAULT_ARC_GAP_DEG", "DEFAULT_ARC_GAP_DEPTH_MM", "MEASUREMENT_COLUMNS", "angular_extent_deg",
    "arc_center", "calcium_area_mm2",
    "calcium_arc_deg", "frame_measurements", "lumen_area_mm2", "plaque_burden_percent", "pullback_summary",
    "vessel_area_mm2",
]

ARC_CENTERS = ("lumen", "vessel", "image")
MEASUREMENT_COLUMNS = ("calcium_area_mm2", "calcium_arc_deg", "arc_center", "lumen_area_mm2", "vessel_area_mm2",
                       "plaque_burden_percent", "calcium_arc_unbridged_deg")
DEFAULT_ARC_GAP_DEG = 20.0
DEFAULT_ARC_GAP_DEPTH_MM = 0.5
CALCIUM_SCORE_ARC_DEG = 270.0
CALCIUM_SCORE_LENGTH_MM = 5.0

_EIGHT_CONNECTED = np.ones((3, 3), bool)
_TWO_PI = 2.0 * math.pi
_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


# ---------------------------------------------------------------------------------------------------- input

def _pixel_area_mm2(pixel_spacing_mm) -> float:
    dy, dx = validate_pixel_spacing_mm(pixel_spacing_mm)
    return dy * dx


# ---------------------------------------------------------------------------------------------------- areas

def calcium_area_mm2(calcium_mask, pixel_spacing_mm) -> float:
    """Calcium area in mm^2: calcium pixels times the pixel area."""
    return int(np.count_nonzero(as_mask(calcium_mask, "calcium_mask"))) * _pixel_area_mm2(pixel_spacing_mm)


def lumen_area_mm2(wall_lumen_labels, pixel_spacing_mm) -> float:
    """Lumen area in mm^2 (label 1)."""
    lumen = check_wall_lumen_labels(wall_lumen_labels) == LUMEN
    return int(np.count_nonzero(lumen)) * _pixel_area_mm2(pixel_spacing_mm)


def vessel_area_mm2(wall_lumen_labels, pixel_spacing_mm) -> float:
    """Vessel (EEM) area in mm^2: everything inside the external elastic membrane, labels 1 | 2."""
    labels = check_wall_lumen_labels(wall_lumen_labels)
    return int(np.count_nonzero((labels == LUMEN) | (labels == VESSEL_WALL))) * _pixel_area_mm2(pixel_spacing_mm)


def plaque_burden_percent(wall_lumen_labels) -> float:
    """(EEM area - lumen area) / EEM area * 100; NaN when there is no vessel. Spacing cancels out."""
    labels = check_wall_lumen_labels(wall_lumen_labels)
    lumen = int(np.count_nonzero(labels == LUMEN))
    vessel = lumen + int(np.count_nonzero(labels == VESSEL_WALL))
    return math.nan if vessel == 0 else 100.0 * (vessel - lumen) / vessel


# ------------------------------------------------------------------------------------------------------ arc

def _largest_region_centroid(mask: np.ndarray) -> tuple[float, float] | None:
    if not mask.any():
        return None
    regions, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count > 1:
        sizes = np.bincount(regions.ravel())
        sizes[0] = 0
        mask = regions == int(np.argmax(sizes))
    rows, cols = np.nonzero(mask)
    return float(rows.mean()), float(cols.mean())


def arc_center(shape: Sequence[int], lumen_mask=None, vessel_mask=None) -> tuple[float, float, str]:
    """(row, column, source) of the arc's viewpoint; source is "lumen", "vessel" or "image" (docs/metrics.md)."""
    for source, mask in (("lumen", lumen_mask), ("vessel", vessel_mask)):
        if mask is None:
            continue
        mask = as_mask(mask, f"{source}_mask")
        if mask.shape != tuple(shape[:2]):
            raise InputError(f"{source}_mask has shape {mask.shape}, expected {tuple(shape[:2])}")
        centroid = _largest_region_centroid(mask)
        if centroid is not None:
            return centroid[0], centroid[1], source
    return (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0, "image"


def angular_extent_deg(mask, center_rc: Sequence[float], pixel_spacing_mm=1.0, gap_deg: float = 0.0,
                       gap_depth_mm: float = DEFAULT_ARC_GAP_DEPTH_MM) -> float:
    """Length in degrees of the union of the angular intervals that the pixel squares of `mask` cover, seen from
    `center_rc` = (row, column) in pixel coordinates (pixel centres at integers). 360 when a pixel contains it.
    With `gap_deg` > 0, gaps narrower than that between calcium at depths at most `gap_depth_mm` apart count as
    covered (docs/metrics.md)."""
    mask = as_mask(mask)
    dy, dx = validate_pixel_spacing_mm(pixel_spacing_mm)
    if not (math.isfinite(gap_deg) and gap_deg >= 0) or not (math.isfinite(gap_depth_mm) and gap_depth_mm >= 0):
        raise InputError(f"arc gap bridging needs finite gap_deg >= 0 and gap_depth_mm >= 0, got {gap_deg}, "
                         f"{gap_depth_mm}")
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0.0
    rel_rows, rel_cols = rows - float(center_rc[0]), cols - float(center_rc[1])
    if np.any((np.abs(rel_rows) <= 0.5) & (np.abs(rel_cols) <= 0.5)):
        return 360.0
    middle = np.arctan2(rel_rows * dy, rel_cols * dx)
    corner_rows = rel_rows[:, None] + _CORNERS[None, :, 0]
    corner_cols = rel_cols[:, None] + _CORNERS[None, :, 1]
    # A square that does not contain the viewpoint spans less than 180 degrees, so its corners' angles relative to
    # its centre's angle lie in (-180, 180) and their min/max are the interval's ends.
    relative = np.arctan2(corner_rows * dy, corner_cols * dx) - middle[:, None]
    relative = (relative + math.pi) % _TWO_PI - math.pi
    starts = middle + relative.min(axis=1)
    ends = middle + relative.max(axis=1)
    shift = np.floor(starts / _TWO_PI) * _TWO_PI
    starts, ends = starts - shift, ends - shift  # starts in [0, 2 pi), ends < starts + pi
    wrapped = ends > _TWO_PI
    covered = _union_length(np.concatenate([starts, np.zeros(int(wrapped.sum()))]),
                            np.concatenate([np.minimum(ends, _TWO_PI), ends[wrapped] - _TWO_PI]))
    if gap_deg > 0:
        depth_mm = np.hypot(rel_rows * dy, rel_cols * dx)
        covered += _bridged_gaps(starts, ends, depth_mm, math.radians(gap_deg), gap_depth_mm)
    return min(math.degrees(covered), 360.0)


def _circle_segments(starts: np.ndarray, ends: np.ndarray) -> list[list[float]]:
    """The union of intervals [start, end] (starts in [0, 2 pi)) as disjoint arcs [a, b] on the circle, sorted by
    a, b possibly beyond 2 pi for the arc crossing 0; one arc of length >= 2 pi when they cover the circle."""
    order = np.argsort(starts, kind="stable")
    segments: list[list[float]] = []
    for start, end in zip(starts[order].tolist(), ends[order].tolist()):
        if segments and start <= segments[-1][1]:
            segments[-1][1] = max(segments[-1][1], end)
        else:
            segments.append([start, end])
    while len(segments) > 1 and segments[-1][1] - _TWO_PI >= segments[0][0]:  # the last arc runs past 0
        first = segments.pop(0)
        segments[-1][1] = max(segments[-1][1], first[1] + _TWO_PI)
    return segments


def _bridged_gaps(starts: np.ndarray, ends: np.ndarray, depth_mm: np.ndarray, gap: float,
                  gap_depth_mm: float) -> float:
    """Total angle (radians) of the gaps of the union narrower than `gap` whose two sides' calcium lies at depths
    at most `gap_depth_mm` apart (docs/metrics.md)."""
    segments = _circle_segments(starts, ends)
    if len(segments) == 1 and segments[0][1] - segments[0][0] >= _TWO_PI:
        return 0.0
    widths = ends - starts
    bridged = 0.0
    for k, (_, left_edge) in enumerate(segments):
        right_edge = segments[(k + 1) % len(segments)][0] + (_TWO_PI if k + 1 == len(segments) else 0.0)
        width = right_edge - left_edge
        if not 0 < width < gap:
            continue
        end_rel = (ends - left_edge + math.pi) % _TWO_PI - math.pi  # pixel ends relative to the gap's left edge
        left = (end_rel >= -gap) & (end_rel - widths <= 0)
        start_rel = (starts - right_edge + math.pi) % _TWO_PI - math.pi
        right = (start_rel <= gap) & (start_rel + widths >= 0)
        if not (left.any() and right.any()):
            continue
        apart = max(depth_mm[right].min() - depth_mm[left].max(), depth_mm[left].min() - depth_mm[right].max(), 0.0)
        if apart <= gap_depth_mm + 1e-9:
            bridged += width
    return bridged


def _union_length(starts: np.ndarray, ends: np.ndarray) -> float:
    """Total length of the union of intervals [start, end] (exact: sort, then the running maximum of the ends)."""
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    gaps = np.maximum(starts[1:] - reach[:-1], 0.0)
    return float(reach[-1] - starts[0] - gaps.sum())


def calcium_arc_deg(calcium_mask, lumen_mask=None, vessel_mask=None, pixel_spacing_mm=1.0, gap_deg: float = 0.0,
                    gap_depth_mm: float = DEFAULT_ARC_GAP_DEPTH_MM) -> float:
    """Calcium arc in degrees seen from the lumen centroid (fallbacks: vessel centroid, image centre).

    See docs/metrics.md for the exact definition and gap bridging (off unless `gap_deg` > 0);
    `arc_center` says which viewpoint a frame gets.
    """
    calcium = as_mask(calcium_mask, "calcium_mask")
    row, col, _ = arc_center(calcium.shape, lumen_mask, vessel_mask)
    return angular_extent_deg(calcium, (row, col), pixel_spacing_mm, gap_deg, gap_depth_mm)


# -------------------------------------------------------------------------------------------------- a frame

def frame_measurements(calcium_mask, wall_lumen_labels, pixel_spacing_mm, arc_gap_deg: float = DEFAULT_ARC_GAP_DEG,
                       arc_gap_depth_mm: float = DEFAULT_ARC_GAP_DEPTH_MM) -> dict:
    """All measurements of one frame: the `MEASUREMENT_COLUMNS` dict, plus "arc_center_rc", the (row, column) of the
    arc's viewpoint (None without a calcium mask), for overlays and later measurements from the same viewpoint.

    Either input may be None (a model without that head): its measurements are NaN; without wall-lumen labels the
    arc is seen from the image centre (arc_center "image"). Both given: they must have the same shape.
    `calcium_arc_deg` bridges gaps below `arc_gap_deg` (0: no bridging); `calcium_arc_unbridged_deg` is the exact
    union of the pixel footprints.
    """
    pixel_area = _pixel_area_mm2(pixel_spacing_mm)
    result = {"calcium_area_mm2": math.nan, "calcium_arc_deg": math.nan, "arc_center": "",
              "lumen_area_mm2": math.nan, "vessel_area_mm2": math.nan, "plaque_burden_percent": math.nan,
              "calcium_arc_unbridged_deg": math.nan, "arc_center_rc": None}
    lumen = vessel = None
    if wall_lumen_labels is not None:
        labels = check_wall_lumen_labels(wall_lumen_labels)
        lumen, vessel = labels == LUMEN, (labels == LUMEN) | (labels == VESSEL_WALL)
        lumen_pixels, vessel_pixels = int(np.count_nonzero(lumen)), int(np.count_nonzero(vessel))
        result.update(lumen_area_mm2=lumen_pixels * pixel_area, vessel_area_mm2=vessel_pixels * pixel_area,
                      plaque_burden_percent=(math.nan if vessel_pixels == 0
                                             else 100.0 * (vessel_pixels - lumen_pixels) / vessel_pixels))
    if calcium_mask is not None:
        calcium = as_mask(calcium_mask, "calcium_mask")
        if lumen is not None and calcium.shape != lumen.shape:
            raise InputError(f"calcium_mask {calcium.shape} and wall_lumen_labels {lumen.shape} shapes differ")
        row, col, source = arc_center(calcium.shape, lumen, vessel)
        unbridged = angular_extent_deg(calcium, (row, col), pixel_spacing_mm)
        bridged = (angular_extent_deg(calcium, (row, col), pixel_spacing_mm, arc_gap_deg, arc_gap_depth_mm)
                   if arc_gap_deg > 0 and 0 < unbridged < 360 else unbridged)
        result.update(calcium_area_mm2=int(np.count_nonzero(calcium)) * pixel_area, calcium_arc_deg=bridged,
                      calcium_arc_unbridged_deg=unbridged, arc_center=source, arc_center_rc=(row, col))
    return result


# ------------------------------------------------------------------------------------------------ a pullback

def _runs(flags: Sequence[bool]) -> list[int]:
    """Lengths of the runs of consecutive True values."""
    runs, current = [], 0
    for flag in flags:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


def pullback_summary(rows: Iterable[Mapping], pullback_speed_mm_s: float | None = None,
                     frame_rate_hz: float | None = None) -> dict:
    """Summary of per-frame measurements (dicts with "calcium_area_mm2" and "calcium_arc_deg") in pullback order.

    A frame has calcium when its calcium area is > 0; a calcium segment is a run of consecutive calcium frames; "over
    270" means strictly more. max_calcium_arc_deg is 0 without calcium, NaN without frames. The lengths in mm
    (frame_interval_mm = speed / rate, calcium_length_mm = frames with calcium x interval, the longest runs, and
    arc_over_270_for_5mm, the calcium-score criterion) are None unless both the speed and the frame rate are given.
    """
    speed = None if pullback_speed_mm_s is None else positive_number(pullback_speed_mm_s, "pullback_speed_mm_s")
    rate = None if frame_rate_hz is None else positive_number(frame_rate_hz, "frame_rate_hz")
    areas, arcs = [], []
    for row in rows:
        areas.append(float(row["calcium_area_mm2"]))
        arcs.append(float(row["calcium_arc_deg"]))
    areas_array, arcs_array = np.asarray(areas, np.float64), np.asarray(arcs, np.float64)
    calcium = areas_array > 0
    over_270 = arcs_array > CALCIUM_SCORE_ARC_DEG
    calcium_runs, over_270_runs = _runs(calcium.tolist()), _runs(over_270.tolist())
    finite_arcs = arcs_array[np.isfinite(arcs_array)]
    summary = {
        "frames": len(areas),
        "frames_with_calcium": int(calcium.sum()),
        "calcium_segments": len(calcium_runs),
        "max_calcium_arc_deg": float(finite_arcs.max()) if finite_arcs.size else math.nan,
        "frames_with_arc_over_180": int((arcs_array > 180.0).sum()),
        "frames_with_arc_over_270": int(over_270.sum()),
        "longest_calcium_run_frames": max(calcium_runs, default=0),
        "longest_arc_over_270_run_frames": max(over_270_runs, default=0),
        "pullback_speed_mm_s": speed,
        "frame_rate_hz": rate,
        "frame_interval_mm": None,
        "calcium_length_mm": None,
        "longest_calcium_segment_mm": None,
        "longest_arc_over_270_mm": None,
        "arc_over_270_for_5mm": None,
    }
    if speed is not None and rate is not None:
        interval = speed / rate
        longest_270 = summary["longest_arc_over_270_run_frames"] * interval
        summary.update(
            frame_interval_mm=interval,
            calcium_length_mm=summary["frames_with_calcium"] * interval,
            longest_calcium_segment_mm=summary["longest_calcium_run_frames"] * interval,
            longest_arc_over_270_mm=longest_270,
            arc_over_270_for_5mm=bool(longest_270 >= CALCIUM_SCORE_LENGTH_MM - 1e-9),
        )
    return summary
