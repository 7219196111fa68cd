"""Superficial calcium per frame and the IVUS calcium score of Zhang et al. per lesion.

The score (Zhang M, Matsumura M, Usui E, et al. "Intravascular ultrasound-derived calcium score to predict stent
expansion in severely calcified lesions", Circ Cardiovasc Interv 2021;14:e010296) gives one point each for
1. superficial calcium with an arc > 270 degrees over more than 5 mm of the pullback,
2. a 360-degree ring of superficial calcium,
3. a calcified nodule,
4. a vessel diameter < 3.5 mm;
a score of 2 or more flags a lesion at risk of stent underexpansion. How each item is measured here (what the
paper's text could and could not confirm is in docs/pullback_report.md):
- superficial: a calcium pixel whose distance to the lumen border is at most `superficial_depth_mm` (0.5 mm by
  default). The distance is measured from pixel centres to the nearest lumen pixel centre, minus half a pixel
  (the border lies on the lumen pixel's edge). The superficial arc is the angular extent (`angular_extent_deg`,
  seen from the lumen centroid as for the calcium arc) of the superficial calcium pixels: the directions in which
  the calcium's leading edge lies within that depth. It needs a lumen: NaN without one (0 without calcium).
- item 1: the longest run of consecutive frames of the lesion with superficial arc > 270 degrees, its length the
  sum of the frames' slabs (`geometry`), must exceed 5 mm strictly ("longer than 5 mm");
- item 2: some frame of the lesion has a superficial arc of 360 degrees (the superficial calcium closes a ring
  around the lumen centroid);
- item 3: this package has no calcified-nodule label, so the item is "not assessed", never counted as 0;
- item 4: the vessel (EEM) diameter at the lesion's frame of maximum calcium arc, as the diameter of the circle of
  the same area, `2 * sqrt(EEM area / pi)`, is < 3.5 mm.
The score is reported as "k of n assessable items" with n the items that could be assessed, and the risk as
"high" (k >= 2), "low" (k + items not assessed < 2) or "cannot be excluded" (otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ivus_tf.measurements import angular_extent_deg
from ivus_tf.metrics import validate_pixel_spacing_mm

ITEMS = ("superficial_arc_over_270_deg_longer_than_5_mm", "superficial_360_deg_ring", "calcified_nodule",
         "vessel_diameter_under_3_5_mm")
ITEM_TITLES = {
    ITEMS[0]: "Superficial calcium arc > 270\N{DEGREE SIGN} over > 5 mm",
    ITEMS[1]: "360\N{DEGREE SIGN} superficial calcium (ring)",
    ITEMS[2]: "Calcified nodule",
    ITEMS[3]: "Vessel diameter < 3.5 mm",
}
MET, NOT_MET, NOT_ASSESSED = "met", "not met", "not assessed"


@dataclass(frozen=True)
class ScoreSettings:
    """Thresholds of the IVUS calcium score; only `superficial_depth_mm` is this package's choice."""

    superficial_depth_mm: float = 0.5
    arc_deg: float = 270.0
    arc_length_mm: float = 5.0
    ring_deg: float = 360.0
    vessel_diameter_mm: float = 3.5
    risk_score: int = 2


def superficial_calcium_mask(calcium_mask: np.ndarray, lumen_mask: np.ndarray, pixel_spacing_mm,
                             depth_mm: float) -> np.ndarray | None:
    """Calcium pixels within `depth_mm` of the lumen border (module docstring); None without a lumen."""
    lumen = np.asarray(lumen_mask, bool)
    if not lumen.any():
        return None
    calcium = np.asarray(calcium_mask, bool)
    if not calcium.any():
        return calcium
    dy, dx = validate_pixel_spacing_mm(pixel_spacing_mm)
    rows, cols = np.flatnonzero(calcium.any(axis=1)), np.flatnonzero(calcium.any(axis=0))
    margin = int(math.ceil(depth_mm / min(dy, dx))) + 2  # lumen farther than this from all calcium cannot matter
    r0, r1 = max(rows.min() - margin, 0), rows.max() + margin + 1
    c0, c1 = max(cols.min() - margin, 0), cols.max() + margin + 1
    outside = ~lumen[r0:r1, c0:c1]
    if outside.all():
        return np.zeros_like(calcium)
    if abs(dy - dx) <= 1e-3 * max(dy, dx):  # square pixels (IVUS): OpenCV's exact transform, several times faster
        distance = cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * dy
    else:
        distance = ndimage.distance_transform_edt(outside, sampling=(dy, dx))
    superficial = np.zeros_like(calcium)
    superficial[r0:r1, c0:c1] = calcium[r0:r1, c0:c1] & (distance - 0.5 * (dy + dx) / 2 <= depth_mm + 1e-9)
    return superficial


def superficial_calcium_arc_deg(calcium_mask, lumen_mask, center_rc: Sequence[float], pixel_spacing_mm,
                                depth_mm: float, calcium_arc_deg: float | None = None) -> float:
    """Angular extent (degrees, from `center_rc`) of the superficial calcium; NaN without a lumen.

    `calcium_arc_deg`, the arc of all the calcium from the same viewpoint if known, is returned as is when all the
    calcium is superficial (the common case; it saves measuring the same pixels twice).
    """
    superficial = superficial_calcium_mask(calcium_mask, lumen_mask, pixel_spacing_mm, depth_mm)
    if superficial is None:
        return math.nan
    if not superficial.any():
        return 0.0
    if calcium_arc_deg is not None and math.isfinite(calcium_arc_deg) and np.array_equal(
            superficial, np.asarray(calcium_mask, bool)):
        return float(calcium_arc_deg)
    return angular_extent_deg(superficial, center_rc, pixel_spacing_mm)


def equivalent_diameter_mm(area_mm2: float) -> float:
    """Diameter of the circle of the same area (the usual 'mean diameter' from a traced area); NaN if unknown."""
    area = float(area_mm2)
    return 2.0 * math.sqrt(area / math.pi) if math.isfinite(area) and area > 0 else math.nan


def _longest_run_mm(flags: np.ndarray, slabs_mm: np.ndarray) -> float:
    best = current = 0.0
    for flag, slab in zip(flags, slabs_mm):
        current = current + slab if flag else 0.0
        best = max(best, current)
    return best


def _item(points_if_met: bool | None, value, unit: str, rule: str, note: str = "") -> dict:
    status = NOT_ASSESSED if points_if_met is None else (MET if points_if_met else NOT_MET)
    return {"status": status, "points": None if points_if_met is None else int(points_if_met),
            "value": None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value,
            "unit": unit, "rule": rule, "note": note}


def lesion_calcium_score(superficial_arcs_deg: Sequence[float], slabs_mm: Sequence[float],
                         vessel_diameter_at_max_arc_mm: float, settings: ScoreSettings = ScoreSettings()) -> dict:
    """The score of one lesion from its frames' superficial arcs (NaN: not assessable), their slab lengths (mm) and
    the vessel diameter at its frame of maximum calcium arc (NaN: no vessel)."""
    arcs = np.asarray(superficial_arcs_deg, np.float64)
    slabs = np.asarray(slabs_mm, np.float64)
    assessable = np.isfinite(arcs)
    unassessed = int((~assessable).sum())
    note = f"{unassessed} frame(s) without a lumen could not be assessed" if unassessed else ""
    items = {}
    if assessable.any():
        run_mm = _longest_run_mm(np.where(assessable, arcs, 0.0) > settings.arc_deg, slabs)
        ring = bool(np.any(arcs[assessable] >= settings.ring_deg - 1e-6))
        items[ITEMS[0]] = _item(run_mm > settings.arc_length_mm + 1e-9, round(run_mm, 4), "mm",
                                f"longest run of frames with superficial arc > {settings.arc_deg:g} deg, "
                                f"> {settings.arc_length_mm:g} mm", note)
        items[ITEMS[1]] = _item(ring, float(np.nanmax(arcs)), "deg",
                                f"maximum superficial arc = {settings.ring_deg:g} deg", note)
    else:
        reason = "no lumen segmentation: calcium depth unknown"
        items[ITEMS[0]] = _item(None, None, "mm", f"superficial arc > {settings.arc_deg:g} deg over "
                                                  f"> {settings.arc_length_mm:g} mm", reason)
        items[ITEMS[1]] = _item(None, None, "deg", f"superficial arc = {settings.ring_deg:g} deg", reason)
    items[ITEMS[2]] = _item(None, None, "", "calcified nodule present",
                            "this package has no calcified-nodule label")
    diameter = float(vessel_diameter_at_max_arc_mm)
    items[ITEMS[3]] = _item(None if not math.isfinite(diameter) else diameter < settings.vessel_diameter_mm,
                            round(diameter, 4) if math.isfinite(diameter) else None, "mm",
                            f"EEM equivalent diameter at the frame of maximum calcium arc "
                            f"< {settings.vessel_diameter_mm:g} mm",
                            "" if math.isfinite(diameter) else "no vessel segmentation at that frame")
    score = sum(item["points"] or 0 for item in items.values())
    assessed = sum(item["status"] != NOT_ASSESSED for item in items.values())
    missing = [ITEM_TITLES[name] for name, item in items.items() if item["status"] == NOT_ASSESSED]
    if score >= settings.risk_score:
        risk = "high"
    elif score + len(missing) < settings.risk_score:
        risk = "low"
    else:
        risk = "cannot be excluded"
    return {"items": items, "score": score, "assessable_items": assessed, "max_items": len(ITEMS),
            "score_text": f"{score} of {assessed} assessable items", "not_assessed": missing,
            "underexpansion_risk": risk,
            "rule": f"score >= {settings.risk_score} flags a lesion at risk of stent underexpansion"}
