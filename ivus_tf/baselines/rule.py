"""A calcium rule with two thresholds: a bright leading edge with an acoustic shadow behind it.

Calcified plaque reflects almost all of the ultrasound: along an A-line it shows as a very bright layer followed by
a shadow (dense fibrous plaque is as bright but casts none). Per frame, at its original resolution and in mm: smooth,
resample to polar coordinates around the image centre (the catheter), keep per A-line the leading run of bright
samples with a dark window behind them, drop narrow or small pieces, and map back by nearest polar sample (so
`ivus_tf.baselines.fit` computes the Cartesian Dice exactly in polar form). `intensity` "normalised" (default)
divides each frame by the 95th percentile of its smoothed field of view, so a contrast change between cases
cancels; "raw" thresholds grey levels 0-255. A floor for learned models; numpy and OpenCV only. Steps, parameters
and why: docs/baselines.md#what-the-rule-does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import cv2
import numpy as np

from ivus_tf.core.config import from_mapping, to_mapping
from ivus_tf.core.errors import InputError

__all__ = ["INTENSITIES", "PolarGrid", "RuleParams", "drop_pieces", "leading_runs", "polar_grid", "predict_calcium",
           "prepare_frame", "run_pixels", "runs_to_mask", "shadow_means"]

INTENSITIES = ("normalised", "raw")
NORMALISING_PERCENTILE = 95.0


@dataclasses.dataclass(frozen=True)
class RuleParams:
    """Parameters of the rule (docs/baselines.md#what-the-rule-does); distances in mm, thresholds in grey levels
    ("raw") or in fractions of the frame's 95th percentile ("normalised"). JSON/YAML via `to_dict` / `from_dict`."""

    intensity: str = "normalised"
    smoothing_sigma_mm: float = 0.06
    bright_threshold: float = 0.8
    shadow_threshold: float = 0.25
    shadow_near_mm: float = 0.3
    shadow_far_mm: float = 1.6
    min_radius_mm: float = 0.7
    max_thickness_mm: float = 0.0
    min_area_mm2: float = 0.0
    min_arc_deg: float = 0.0

    def validate(self, source: str = "rule parameters") -> None:
        if self.intensity not in INTENSITIES:
            raise InputError(f"{source}: intensity {self.intensity!r} is unknown; valid: {', '.join(INTENSITIES)}")
        for name in ("smoothing_sigma_mm", "bright_threshold", "shadow_threshold", "min_radius_mm",
                     "max_thickness_mm", "min_area_mm2", "min_arc_deg", "shadow_near_mm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{source}: {name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.shadow_far_mm) and self.shadow_far_mm > self.shadow_near_mm):
            raise InputError(f"{source}: shadow_far_mm ({self.shadow_far_mm!r}) must be greater than "
                             f"shadow_near_mm ({self.shadow_near_mm!r})")

    def to_dict(self) -> dict:
        return to_mapping(self)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "rule parameters") -> RuleParams:
        return from_mapping(cls, data, source)


# ------------------------------------------------------------------------------------------------- geometry

@dataclasses.dataclass(frozen=True, eq=False)
class PolarGrid:
    """Polar sampling of an H x W frame around its centre: `angles` A-lines x `samples` radial steps of `step_mm`.

    Sample (a, k) lies at angle 2 pi a / angles and radius (k + 0.5) * step_mm, out to the inscribed circle.
    `map_x`, `map_y` (float32 [angles, samples]) feed `cv2.remap`; `cartesian_index` (int64 [H * W]) is the flat
    polar index of each pixel's nearest sample (-1 outside the circle); `pixel_counts` (float32 [angles * samples])
    counts the pixels that take each sample's value, so sum(mask * pixel_counts) is the Cartesian area in pixels.
    """

    shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    step_mm: float
    angles: int
    samples: int
    map_x: np.ndarray
    map_y: np.ndarray
    cartesian_index: np.ndarray
    pixel_counts: np.ndarray

    @property
    def radii_mm(self) -> np.ndarray:
        return (np.arange(self.samples) + 0.5) * self.step_mm

    def steps(self, distance_mm: float) -> int:
        """A distance in mm as a whole number of radial steps."""
        return int(round(distance_mm / self.step_mm))

    def to_cartesian(self, polar_mask: np.ndarray) -> np.ndarray:
        """bool [H, W] from a bool [angles, samples] mask (nearest sample; False outside the inscribed circle)."""
        flat = np.append(polar_mask.reshape(-1), False)
        return flat[self.cartesian_index].reshape(self.shape)


@functools.lru_cache(maxsize=16)
def polar_grid(shape: tuple[int, int], spacing_mm: tuple[float, float]) -> PolarGrid:
    """The `PolarGrid` of frames of `shape` (rows, columns) and (row, column) `spacing_mm`; cached."""
    height, width = (int(v) for v in shape)
    dy, dx = (float(v) for v in spacing_mm)
    step = min(dx, dy)
    samples = int(min(height * dy, width * dx) / 2 / step)
    if samples < 4:
        raise InputError(f"a {height}x{width} frame is too small for the calcium rule (needs >= 8x8 pixels)")
    angles = max(64, int(math.ceil(math.pi * samples)))  # about one A-line per 2 pixels at the rim
    cy, cx = (height - 1) / 2, (width - 1) / 2
    theta = 2 * np.pi * np.arange(angles) / angles
    radius = (np.arange(samples) + 0.5) * step
    map_x = (cx + np.cos(theta)[:, None] * radius[None, :] / dx).astype(np.float32)
    map_y = (cy + np.sin(theta)[:, None] * radius[None, :] / dy).astype(np.float32)
    yy, xx = np.mgrid[:height, :width]
    y_mm, x_mm = (yy - cy) * dy, (xx - cx) * dx
    k = np.floor(np.hypot(y_mm, x_mm) / step).astype(np.int64)
    a = np.round(np.mod(np.arctan2(y_mm, x_mm), 2 * np.pi) / (2 * np.pi) * angles).astype(np.int64) % angles
    index = np.where(k < samples, a * samples + k, angles * samples).reshape(-1)  # the last entry: outside
    counts = np.bincount(index, minlength=angles * samples + 1)[:-1].astype(np.float32)
    index[index == angles * samples] = -1
    return PolarGrid((height, width), (dy, dx), step, angles, samples, map_x, map_y, index, counts)


# --------------------------------------------------------------------------------------------- the rule

def prepare_frame(image: np.ndarray, grid: PolarGrid, smoothing_sigma_mm: float, intensity: str) -> np.ndarray:
    """float32 [angles, samples]: the frame smoothed, resampled to polar and normalised per `intensity`."""
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.shape != grid.shape:
        raise InputError(f"frame of shape {image.shape} does not match its polar grid {grid.shape}")
    if smoothing_sigma_mm > 0:
        dy, dx = grid.spacing_mm
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=smoothing_sigma_mm / dx, sigmaY=smoothing_sigma_mm / dy,
                                 borderType=cv2.BORDER_REFLECT)
    polar = cv2.remap(image, grid.map_x, grid.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if intensity == "normalised":
        inside = grid.cartesian_index >= 0
        reference = float(np.percentile(image.reshape(-1)[inside], NORMALISING_PERCENTILE))
        polar = polar / max(reference, 1e-3)
    return polar


def shadow_means(polar: np.ndarray, grid: PolarGrid, near_mm: float, far_mm: float) -> np.ndarray:
    """float32 [..., angles, samples]: mean of `polar` over [near_mm, far_mm] behind each sample on its A-line;
    NaN where less than half of that window lies inside the A-line."""
    samples = polar.shape[-1]
    near = max(1, grid.steps(near_mm))
    far = max(near, grid.steps(far_mm))
    cumulative = np.zeros(polar.shape[:-1] + (samples + 1,), np.float64)
    np.cumsum(polar, axis=-1, out=cumulative[..., 1:])
    k = np.arange(samples)
    lo = np.minimum(k + near, samples)
    hi = np.minimum(k + far, samples - 1) + 1
    count = hi - lo
    sums = np.take(cumulative, hi, axis=-1) - np.take(cumulative, lo, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / np.maximum(count, 1)).astype(np.float32)
    means[..., 2 * count < far - near + 1] = np.nan
    return means


def leading_runs(polar: np.ndarray, behind: np.ndarray, grid: PolarGrid, params: RuleParams
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(first, end), int [..., angles]: per A-line, samples first..end-1 are the leading run of bright samples
    with a shadow behind; first == end where the A-line has none."""
    samples = polar.shape[-1]
    k = np.arange(samples)
    with np.errstate(invalid="ignore"):
        candidate = (polar > params.bright_threshold) & (behind < params.shadow_threshold)
    candidate[..., :int(math.ceil(params.min_radius_mm / grid.step_mm - 0.5))] = False
    found = candidate.any(axis=-1)
    first = np.where(found, candidate.argmax(axis=-1), 0)
    stop = ~candidate & (k >= first[..., None])
    end = np.where(found, np.where(stop.any(axis=-1), stop.argmax(axis=-1), samples), 0)
    if params.max_thickness_mm > 0:
        end = np.minimum(end, first + max(1, grid.steps(params.max_thickness_mm)))
    return first, end


def run_pixels(first: np.ndarray, end: np.ndarray, grid: PolarGrid) -> np.ndarray:
    """float [..., angles]: the number of Cartesian pixels that take their value from each A-line's run."""
    cumulative = np.concatenate([np.zeros((grid.angles, 1)), np.cumsum(
        grid.pixel_counts.reshape(grid.angles, grid.samples), axis=1)], axis=1)
    rows = np.arange(grid.angles)
    return cumulative[rows, end] - cumulative[rows, first]


def drop_pieces(first: np.ndarray, end: np.ndarray, grid: PolarGrid, min_area_mm2: float, min_arc_deg: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(first, end) [..., angles] without the 8-connected pieces smaller than `min_area_mm2` in the Cartesian
    frame or spanning fewer than `min_arc_deg` degrees of A-lines (a guidewire's echo is a spot with a narrow
    shadow; calcium is an arc). With one run per A-line, a piece is a chain of neighbouring A-lines (the last
    neighbours the first) whose runs touch: samples first..end-1 and first'..end'-1 are 8-neighbours when
    max(first, first') <= min(end, end')."""
    if min_area_mm2 <= 0 and min_arc_deg <= 0:
        return first, end
    shape = first.shape
    first, end = first.reshape(-1, grid.angles), end.reshape(-1, grid.angles)
    present = end > first
    after_first, after_end = np.roll(first, -1, axis=1), np.roll(end, -1, axis=1)
    linked = present & np.roll(present, -1, axis=1) & (np.maximum(first, after_first) <= np.minimum(end, after_end))
    starts = present & ~np.roll(linked, 1, axis=1)  # a piece starts where the previous A-line does not link to it
    # Number pieces from an A-line where one starts, so no piece straddles the seam; a closed ring has no start
    offset = np.where(starts.any(axis=1), starts.argmax(axis=1), 0)
    order = (np.arange(grid.angles) + offset[:, None]) % grid.angles
    rows = np.arange(first.shape[0])[:, None]
    piece = np.cumsum(starts[rows, order], axis=1) + rows * (grid.angles + 1)  # unique over frames
    piece = np.where(present[rows, order], piece, -1)
    labels = np.empty_like(piece)
    labels[rows, order] = piece
    used = labels >= 0
    keep = np.ones(first.shape[0] * (grid.angles + 1), bool)
    if min_arc_deg > 0:
        arc = np.bincount(labels[used], minlength=keep.size) * 360.0 / grid.angles
        keep &= arc >= min_arc_deg - 1e-9
    if min_area_mm2 > 0:
        pixels = run_pixels(first, end, grid)
        area = np.bincount(labels[used], weights=pixels[used], minlength=keep.size)
        keep &= area * grid.spacing_mm[0] * grid.spacing_mm[1] >= min_area_mm2
    kept = used & keep[np.maximum(labels, 0)]
    return np.where(kept, first, 0).reshape(shape), np.where(kept, end, 0).reshape(shape)


def runs_to_mask(first: np.ndarray, end: np.ndarray, samples: int) -> np.ndarray:
    """bool [..., angles, samples] from per-A-line runs."""
    k = np.arange(samples)
    return (k >= first[..., None]) & (k < end[..., None])


def predict_calcium(image: np.ndarray, pixel_spacing_mm, params: RuleParams | None = None) -> np.ndarray:
    """bool [H, W] calcium mask of one frame (grey levels 0-255, [H, W] or [H, W, 1]) by the rule (module
    docstring); `pixel_spacing_mm` is a number or a (row, column) pair."""
    from ivus_tf.metrics import validate_pixel_spacing_mm

    params = params or RuleParams()
    params.validate()
    image = np.asarray(image)
    grid = polar_grid(image.shape[:2], validate_pixel_spacing_mm(pixel_spacing_mm))
    polar = prepare_frame(image, grid, params.smoothing_sigma_mm, params.intensity)
    behind = shadow_means(polar, grid, params.shadow_near_mm, params.shadow_far_mm)
    first, end = leading_runs(polar, behind, grid, params)
    first, end = drop_pieces(first, end, grid, params.min_area_mm2, params.min_arc_deg)
    return grid.to_cartesian(runs_to_mask(first, end, grid.samples))
