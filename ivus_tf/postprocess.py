"""Clean masks: anatomical post-processing of predicted label maps at the frame's original resolution.

A segmentation network labels pixels one by one; a few rules of IVUS anatomy (`../shared/IVUS_PRIMER.md`) remove
what cannot be right, as nnU-Net's connected-component post-processing does across sites. On the wall-lumen
label map (0 background, 1 lumen, 2 vessel wall) and the calcium mask of one frame, in this order:

1. lumen (`lumen_one_region`): the lumen is ONE region around the catheter, which sits at the image centre of a
   scan-converted frame: of the 8-connected lumen regions only the one containing the centre, or else the one
   nearest to it (distance in mm), is kept; `fill_holes` fills its holes (a catheter or guidewire echo labelled
   as wall inside the lumen becomes lumen). Removed lumen becomes vessel wall inside the vessel, else background.
2. vessel (`vessel_one_region`): the vessel (inside the EEM = labels 1 | 2) is ONE region enclosing the lumen:
   holes filled, then of its 8-connected regions the one holding the most lumen is kept (the largest when there
   is no lumen), and the lumen is put inside it (a label map cannot hold lumen outside the vessel anyway).
3. calcium outside the lumen (`calcium_outside_lumen`): calcium pixels inside the (cleaned) lumen are removed.
   Calcium lies in the plaque; blood speckle and the guidewire echo in the lumen are its classic look-alikes.
4. calcium inside the vessel (`calcium_inside_vessel`): an 8-connected calcium region is removed when none of its
   pixels lies within `calcium_vessel_tolerance_mm` of the (cleaned) vessel. Whole regions, not pixels: calcium
   sits in the plaque, often deep against the EEM, and the predicted EEM behind a calcification is a guess (the
   calcium's shadow hides the media), so a region straddling the EEM is kept whole; a region lying entirely
   beyond the tolerance (bright adventitia, pericardium) is not calcified plaque. Skipped when no vessel was
   predicted (nothing to judge by).
5. islands (`min_island_mm2`): 8-connected regions smaller than this area in mm^2 (pixels x row spacing x column
   spacing, so the rule means the same at any pixel spacing) are removed: calcium regions, and lumen and vessel
   regions where steps 1-2 are off (with them on, only one region is left anyway).

Steps 3-4 need wall-lumen labels; a calcium-only model gets step 5 only. The default (`PRESETS["default"]`, the
nnU-Net-style cleaning) turns every step on; `PRESETS["none"]` turns every step off. A frame is cleaned by
`postprocess_frame`; `load_postprocess` takes a preset name or a YAML file of `PostprocessConfig` fields.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import LUMEN, VESSEL_WALL, check_wall_lumen_labels
from ivus_tf.metrics import as_mask, validate_pixel_spacing_mm

__all__ = ["PRESETS", "PostprocessConfig", "clean_calcium", "clean_wall_lumen", "describe_postprocess",
           "load_postprocess", "postprocess_frame", "remove_islands"]

_EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    """Which cleaning steps run (module docstring) and their sizes, in mm and mm^2."""

    lumen_one_region: bool = True
    vessel_one_region: bool = True
    fill_holes: bool = True
    calcium_outside_lumen: bool = True
    calcium_inside_vessel: bool = True
    calcium_vessel_tolerance_mm: float = 0.5
    min_island_mm2: float = 0.01  # a 0.1 x 0.1 mm square: 25 pixels at 0.02 mm per pixel

    def validate(self, source: str = "postprocess config") -> None:
        for field in ("calcium_vessel_tolerance_mm", "min_island_mm2"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{source}: {field} must be a finite number >= 0, got {value}")

    @property
    def enabled(self) -> bool:
        """True when any step changes anything."""
        return (self.lumen_one_region or self.vessel_one_region or self.fill_holes or self.calcium_outside_lumen
                or self.calcium_inside_vessel or self.min_island_mm2 > 0)


PRESETS = {
    "default": PostprocessConfig(),
    "none": PostprocessConfig(lumen_one_region=False, vessel_one_region=False, fill_holes=False,
                              calcium_outside_lumen=False, calcium_inside_vessel=False, min_island_mm2=0.0),
}


def load_postprocess(name_or_path: str) -> PostprocessConfig:
    """A preset (`PRESETS`: "default", "none") or a YAML file of `PostprocessConfig` fields (the rest default)."""
    from ivus_tf.core.config import load_yaml

    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if not str(name_or_path).endswith((".yaml", ".yml")):
        raise InputError(f"postprocess {name_or_path!r}: not a preset ({', '.join(PRESETS)}) nor a .yaml file")
    config = load_yaml(PostprocessConfig, Path(name_or_path))
    config.validate(str(name_or_path))
    return config


def describe_postprocess(config: PostprocessConfig | None) -> dict:
    """For summary.json and metrics.json: the preset's name ("custom" when none matches) and every field."""
    config = config or PRESETS["none"]
    name = next((key for key, preset in PRESETS.items() if preset == config), "custom")
    return {"preset": name, "enabled": config.enabled, **dataclasses.asdict(config)}


# ------------------------------------------------------------------------------------------------ regions

def _regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=_EIGHT_CONNECTED)


def remove_islands(mask, pixel_spacing_mm, min_area_mm2: float) -> np.ndarray:
    """`mask` (bool) without its 8-connected regions of area < `min_area_mm2` (pixels x pixel area in mm^2)."""
    mask = as_mask(mask)
    dy, dx = validate_pixel_spacing_mm(pixel_spacing_mm)
    if min_area_mm2 <= 0 or not mask.any():
        return mask.copy()
    regions, count = _regions(mask)
    areas_mm2 = np.bincount(regions.ravel(), minlength=count + 1) * (dy * dx)
    keep = areas_mm2 >= min_area_mm2 * (1 - 1e-9)  # an island of exactly the minimum stays, whatever the rounding
    keep[0] = False
    return keep[regions]


def _region_nearest_centre(mask: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """The 8-connected region of `mask` containing the image centre, else the one nearest to it in mm (ties: the
    larger region)."""
    regions, count = _regions(mask)
    if count <= 1:
        return mask.copy()
    rows, cols = np.indices(mask.shape, dtype=np.float64)
    centre_row, centre_col = (mask.shape[0] - 1) / 2.0, (mask.shape[1] - 1) / 2.0
    # a pixel is a square: the distance from the centre to its nearest point (0 when the square holds the centre)
    distance = np.hypot(np.maximum(np.abs(rows - centre_row) - 0.5, 0) * dy,
                        np.maximum(np.abs(cols - centre_col) - 0.5, 0) * dx)
    index = np.arange(1, count + 1)
    nearest = ndimage.minimum(distance, regions, index)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    best = min(range(count), key=lambda i: (nearest[i], -sizes[i]))
    return regions == index[best]


def _region_holding_most(mask: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 8-connected region of `mask` overlapping `inner` most (the largest region when none overlaps)."""
    regions, count = _regions(mask)
    if count <= 1:
        return mask.copy()
    overlap = np.bincount(regions[inner].ravel(), minlength=count + 1)[1:]
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    best = max(range(count), key=lambda i: (overlap[i], sizes[i]))
    return regions == best + 1


def clean_wall_lumen(wall_lumen_labels, pixel_spacing_mm, config: PostprocessConfig) -> np.ndarray:
    """Steps 1, 2 and 5 of the module docstring on a label map (0 background, 1 lumen, 2 vessel wall)."""
    labels = check_wall_lumen_labels(wall_lumen_labels)
    dy, dx = validate_pixel_spacing_mm(pixel_spacing_mm)
    lumen = labels == LUMEN
    vessel = (labels == LUMEN) | (labels == VESSEL_WALL)
    lumen = remove_islands(lumen, (dy, dx), config.min_island_mm2) if not config.lumen_one_region else lumen
    vessel = remove_islands(vessel, (dy, dx), config.min_island_mm2) if not config.vessel_one_region else vessel
    if config.lumen_one_region and lumen.any():
        lumen = _region_nearest_centre(lumen, dy, dx)
    if config.fill_holes:
        lumen = ndimage.binary_fill_holes(lumen)
        vessel = ndimage.binary_fill_holes(vessel)
    if config.vessel_one_region and vessel.any():
        vessel = _region_holding_most(vessel, lumen)
    vessel = vessel | lumen
    cleaned = np.zeros(labels.shape, np.uint8)
    cleaned[vessel] = VESSEL_WALL
    cleaned[lumen] = LUMEN
    return cleaned.astype(labels.dtype, copy=False)


def clean_calcium(calcium_mask, wall_lumen_labels, pixel_spacing_mm, config: PostprocessConfig) -> np.ndarray:
    """Steps 3-5 of the module docstring: the calcium mask (bool) given the (already cleaned) label map or None."""
    calcium = as_mask(calcium_mask, "calcium_mask").copy()
    dy, dx = validate_pixel_spacing_mm(pixel_spacing_mm)
    if wall_lumen_labels is not None:
        labels = check_wall_lumen_labels(wall_lumen_labels)
        if labels.shape != calcium.shape:
            raise InputError(f"calcium_mask {calcium.shape} and wall_lumen_labels {labels.shape} shapes differ")
        vessel = (labels == LUMEN) | (labels == VESSEL_WALL)
        if config.calcium_outside_lumen:
            calcium &= labels != LUMEN
        if config.calcium_inside_vessel and vessel.any() and calcium.any():
            beyond_mm = ndimage.distance_transform_edt(~vessel, sampling=(dy, dx))
            regions, count = _regions(calcium)
            closest = ndimage.minimum(beyond_mm, regions, np.arange(1, count + 1))
            keep = np.concatenate([[False], np.asarray(closest) <= config.calcium_vessel_tolerance_mm + 1e-9])
            calcium = keep[regions]
    return remove_islands(calcium, (dy, dx), config.min_island_mm2)


def postprocess_frame(calcium_mask, wall_lumen_labels, pixel_spacing_mm,
                      config: PostprocessConfig | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(calcium, wall_lumen_labels) of one frame cleaned by `config` (None: returned as given). Either may be None
    (a model without that head); the calcium mask comes back as uint8 0/1, the labels in their own dtype."""
    if config is None or not config.enabled:
        return calcium_mask, wall_lumen_labels
    labels = None if wall_lumen_labels is None else clean_wall_lumen(wall_lumen_labels, pixel_spacing_mm, config)
    calcium = None
    if calcium_mask is not None:
        calcium = clean_calcium(calcium_mask, labels, pixel_spacing_mm, config).astype(np.uint8)
    return calcium, labels
