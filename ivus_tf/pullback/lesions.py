"""Calcified lesions: contiguous calcified segments along the pullback, small gaps bridged.

A frame is calcified when its calcium area exceeds `calcium_min_area_mm2` (default 0: any calcium pixel, which is
the same as a calcium arc > 0). Runs of calcified frames are merged when the frames between them are at most
`gap_mm` long (default 1 mm: about one heartbeat of a 0.5 mm/s pullback, so a frame or two lost to cardiac motion
or a missed deposit does not split one lesion into two; a core lab reading frames 1 mm apart would not see the gap
either). A merged segment is a lesion when it is at least `min_length_mm` long (default 0.5 mm; 0 keeps single
frames). Lengths are sums of the frames' slabs (`geometry`): a lesion of k consecutive frames at interval dz is
k * dz long and spans [start_mm, end_mm) = [z_first, z_last + dz).

Per lesion: start/end (mm and frame), length, maximum and mean calcium arc (the mean over all frames of the
segment, bridged frames counting with their own arc), maximum superficial arc and calcium area, minimum lumen
area, maximum plaque burden, minimum vessel diameter, each with the frame (0-based index in the pullback and its
frame_id) where it occurs (the first such frame on ties; None when the model gives no such measurement), and the
IVUS calcium score (`calcium_score`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ivus_tf.pullback.calcium_score import ScoreSettings, lesion_calcium_score

TOLERANCE_MM = 1e-9


@dataclass(frozen=True)
class LesionSettings:
    gap_mm: float = 1.0
    min_length_mm: float = 0.5
    calcium_min_area_mm2: float = 0.0


def calcified_frames(calcium_area_mm2: Sequence[float], min_area_mm2: float = 0.0) -> np.ndarray:
    """True where the calcium area exceeds `min_area_mm2` (NaN, a model without calcium: False)."""
    areas = np.asarray(calcium_area_mm2, np.float64)
    return np.where(np.isfinite(areas), areas, -1.0) > min_area_mm2


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def calcified_segments(calcified: Sequence[bool], slabs_mm: Sequence[float], gap_mm: float,
                       min_length_mm: float) -> list[tuple[int, int]]:
    """(first, last) frame indices (inclusive) of the lesions: runs of calcified frames merged across gaps of at
    most `gap_mm`, kept when at least `min_length_mm` long."""
    slabs = np.asarray(slabs_mm, np.float64)
    segments: list[list[int]] = []
    for first, last in _runs(np.asarray(calcified, bool)):
        if segments and slabs[segments[-1][1] + 1:first].sum() <= gap_mm + TOLERANCE_MM:
            segments[-1][1] = last
        else:
            segments.append([first, last])
    return [(first, last) for first, last in segments
            if slabs[first:last + 1].sum() >= min_length_mm - TOLERANCE_MM]


def _extreme(values: np.ndarray, first: int, kind: str) -> tuple[float | None, int | None]:
    finite = np.isfinite(values)
    if not finite.any():
        return None, None
    masked = np.where(finite, values, -np.inf if kind == "max" else np.inf)
    offset = int(np.argmax(masked) if kind == "max" else np.argmin(masked))
    return float(values[offset]), first + offset


def describe_lesion(number: int, first: int, last: int, table: Mapping[str, np.ndarray],
                    frame_ids: Sequence[str], positions_mm: np.ndarray, slabs_mm: np.ndarray,
                    score_settings: ScoreSettings = ScoreSettings()) -> dict:
    """The lesion's numbers (module docstring). `table` holds per-frame columns of the pullback: calcium_area_mm2,
    calcium_arc_deg, superficial_calcium_arc_deg, lumen_area_mm2, plaque_burden_percent, vessel_diameter_mm."""
    part = {name: np.asarray(values, np.float64)[first:last + 1] for name, values in table.items()}
    slabs = np.asarray(slabs_mm, np.float64)[first:last + 1]
    lesion = {"lesion": number, "first_frame": first, "last_frame": last, "first_frame_id": frame_ids[first],
              "last_frame_id": frame_ids[last], "start_mm": float(positions_mm[first]),
              "end_mm": float(positions_mm[first] + slabs.sum()), "length_mm": float(slabs.sum()),
              "frames": last - first + 1,
              "calcified_frames": int((np.nan_to_num(part["calcium_area_mm2"], nan=0.0) > 0).sum())}
    for name, column, kind in (("max_calcium_arc_deg", "calcium_arc_deg", "max"),
                               ("max_superficial_calcium_arc_deg", "superficial_calcium_arc_deg", "max"),
                               ("max_calcium_area_mm2", "calcium_area_mm2", "max"),
                               ("min_lumen_area_mm2", "lumen_area_mm2", "min"),
                               ("max_plaque_burden_percent", "plaque_burden_percent", "max"),
                               ("min_vessel_diameter_mm", "vessel_diameter_mm", "min")):
        value, frame = _extreme(part[column], first, kind)
        prefix = name.rsplit("_", 1)[0]
        lesion[name] = value
        lesion[f"{prefix}_frame"] = frame
        lesion[f"{prefix}_frame_id"] = None if frame is None else frame_ids[frame]
        lesion[f"{prefix}_position_mm"] = None if frame is None else float(positions_mm[frame])
    arcs = part["calcium_arc_deg"]
    lesion["mean_calcium_arc_deg"] = float(np.nanmean(arcs)) if np.isfinite(arcs).any() else None
    max_arc_frame = lesion["max_calcium_arc_frame"]
    diameter = math.nan if max_arc_frame is None else float(table["vessel_diameter_mm"][max_arc_frame])
    lesion["vessel_diameter_at_max_arc_mm"] = diameter if math.isfinite(diameter) else None
    lesion["calcium_score"] = lesion_calcium_score(part["superficial_calcium_arc_deg"], slabs, diameter,
                                                   score_settings)
    return lesion


def find_lesions(table: Mapping[str, np.ndarray], frame_ids: Sequence[str], positions_mm: np.ndarray,
                 slabs_mm: np.ndarray, settings: LesionSettings = LesionSettings(),
                 score_settings: ScoreSettings = ScoreSettings()) -> list[dict]:
    """All lesions of one pullback, in pullback order, numbered from 1."""
    calcified = calcified_frames(table["calcium_area_mm2"], settings.calcium_min_area_mm2)
    segments = calcified_segments(calcified, slabs_mm, settings.gap_mm, settings.min_length_mm)
    return [describe_lesion(number, first, last, table, frame_ids, positions_mm, slabs_mm, score_settings)
            for number, (first, last) in enumerate(segments, 1)]
