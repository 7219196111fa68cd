"""What `predict` keeps of each frame while a pullback streams: a few numbers, one line of pixels per L-mode angle
and the worst frames so far. Per-frame work is a handful of array lookups plus, for frames with calcium and a
lumen, one distance transform near the lumen (the superficial arc); the figures are drawn once, at the end.

`frame_columns` are the per-frame additions to measurements.csv:
- position_mm: where the frame lies along the pullback (`geometry`), empty without lengths;
- superficial_calcium_arc_deg: arc of the calcium within `superficial_depth_mm` of the lumen border
  (`calcium_score`), empty without a lumen;
- lumen_diameter_mm, vessel_diameter_mm: diameters of the circles of the lumen and EEM areas;
- geometry_source: where position_mm came from (the same sentence for every frame of a pullback).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ivus_tf.core.vocab import LUMEN
from ivus_tf.measurements import arc_center
from ivus_tf.pullback.calcium_score import equivalent_diameter_mm, superficial_calcium_arc_deg
from ivus_tf.pullback.geometry import PullbackGeometry

FRAME_COLUMNS = ("position_mm", "superficial_calcium_arc_deg", "lumen_diameter_mm", "vessel_diameter_mm",
                 "geometry_source")
TABLE_COLUMNS = ("calcium_area_mm2", "calcium_arc_deg", "superficial_calcium_arc_deg", "lumen_area_mm2",
                 "vessel_area_mm2", "plaque_burden_percent", "lumen_diameter_mm", "vessel_diameter_mm")


@dataclass
class KeptFrame:
    """A copy of one frame and its masks (the worst frames of a pullback)."""

    index: int
    frame_id: str
    image: np.ndarray
    calcium: np.ndarray | None
    labels: np.ndarray | None
    pixel_spacing_mm: float
    values: dict


@dataclass
class WorstFrames:
    """The frame of maximum calcium arc and of minimum lumen area seen so far (first one on ties)."""

    max_arc: KeptFrame | None = None
    min_lumen: KeptFrame | None = None

    def offer(self, index, frame, calcium, labels, values) -> None:
        arc, lumen = values.get("calcium_arc_deg", math.nan), values.get("lumen_area_mm2", math.nan)
        if math.isfinite(arc) and arc > 0 and (self.max_arc is None or arc > self.max_arc.values["calcium_arc_deg"]):
            self.max_arc = _keep(index, frame, calcium, labels, values)
        if math.isfinite(lumen) and lumen > 0 and (self.min_lumen is None
                                                   or lumen < self.min_lumen.values["lumen_area_mm2"]):
            self.min_lumen = _keep(index, frame, calcium, labels, values)


def _keep(index, frame, calcium, labels, values) -> KeptFrame:
    return KeptFrame(index, frame.frame_id, frame.image.copy(), None if calcium is None else calcium != 0,
                     None if labels is None else labels.astype(np.uint8), frame.pixel_spacing_mm, dict(values))


@dataclass
class PullbackCollector:
    """Per-pullback accumulator: `add` each frame in order; `table`/`frame_ids` are what the report reads."""

    case_id: str
    geometry: PullbackGeometry
    superficial_depth_mm: float = 0.5
    lmode_angle_deg: float | None = None  # None: no views kept (predict without --report)
    frame_ids: list = field(default_factory=list)
    columns: dict = field(default_factory=lambda: {name: [] for name in TABLE_COLUMNS})
    pixel_spacing_mm: set = field(default_factory=set)
    worst: WorstFrames = field(default_factory=WorstFrames)
    lmode: object = None

    def superficial_arc_deg(self, frame, calcium, labels, values: dict) -> float:
        """The frame's superficial calcium arc (0 without calcium, NaN without a lumen). Reads no state, so
        predict's writer threads compute it while `add` keeps the frames in order."""
        lumen = None if labels is None else labels == LUMEN
        if calcium is not None and not np.any(calcium):
            return 0.0
        if calcium is not None and lumen is not None and lumen.any():
            center = values.get("arc_center_rc") or arc_center(calcium.shape, lumen, labels != 0)[:2]
            # the shortcut must be the exact union (what superficial_calcium_arc_deg measures otherwise), not the
            # gap-bridged calcium_arc_deg
            whole_arc = values.get("calcium_arc_unbridged_deg", values.get("calcium_arc_deg"))
            return superficial_calcium_arc_deg(calcium != 0, lumen, center, frame.pixel_spacing_mm,
                                               self.superficial_depth_mm, whole_arc)
        return math.nan

    def add(self, frame, calcium, labels, values: dict, superficial_arc_deg: float | None = None) -> dict:
        """Record one frame (its masks may be None for a model without that head); return its `FRAME_COLUMNS`.
        `superficial_arc_deg`: `self.superficial_arc_deg(...)` when already computed."""
        index = len(self.frame_ids)
        superficial = (self.superficial_arc_deg(frame, calcium, labels, values) if superficial_arc_deg is None
                       else superficial_arc_deg)
        extra = {"position_mm": self.geometry.position_mm(index) if index < self.geometry.frames else math.nan,
                 "superficial_calcium_arc_deg": superficial,
                 "lumen_diameter_mm": equivalent_diameter_mm(values["lumen_area_mm2"]),
                 "vessel_diameter_mm": equivalent_diameter_mm(values["vessel_area_mm2"]),
                 "geometry_source": self.geometry.position_source}
        merged = {**values, **extra}
        self.frame_ids.append(frame.frame_id)
        for name in TABLE_COLUMNS:
            self.columns[name].append(float(merged[name]))
        self.pixel_spacing_mm.add(float(frame.pixel_spacing_mm))
        if self.lmode_angle_deg is not None:
            if self.lmode is None:
                from ivus_tf.pullback.lmode import LModeAccumulator

                self.lmode = LModeAccumulator(frame.image.shape, self.lmode_angle_deg)
            self.lmode.add(frame.image, calcium, labels)
            self.worst.offer(index, frame, calcium, labels, merged)
        return extra

    def table(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(values, np.float64) for name, values in self.columns.items()}
