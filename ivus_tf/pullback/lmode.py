"""The L-mode (longitudinal view): a cut along the pullback through the catheter at one angle.

Angles are in degrees counter-clockwise from 3 o'clock as the frame is displayed (90 = 12 o'clock). The cut at
angle a is the diameter through the image centre (the catheter): its upper half in the L-mode is the ray at a,
its lower half the ray at a + 180, so 0 and 180 give the same picture upside down.

While frames stream, `LModeAccumulator` keeps, per frame and per candidate angle (every `step_deg` = 10 degrees,
plus the requested one), one line of `samples` (257) gray values and label codes (nearest pixel): 2 bytes x 19 x
257, about 10 KB per frame instead of the frame itself (250 KB at 500 x 500) and its masks. At the end it picks the
angle of maximum calcium (the diameter crossing the most calcium over the pullback) and draws both cuts with
calcium (red), lumen (yellow) and vessel (EEM, cyan) overlaid, the x axis in mm along the pullback (frame numbers
without lengths) and the lesions marked above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ivus_tf.overlay import COLOURS_HEX

CALCIUM_BIT = 4  # label code: 0 background, 1 lumen, 2 vessel wall, +4 calcium


class LModeAccumulator:
    """Lines of pixels through the frame centre at candidate angles, one set per frame (module docstring)."""

    def __init__(self, shape: Sequence[int], angle_deg: float = 0.0, step_deg: float = 10.0, samples: int = 257):
        height, width = int(shape[0]), int(shape[1])
        self.shape = (height, width)
        self.requested_deg = float(angle_deg) % 180.0
        angles = {round(a, 6) for a in np.arange(0.0, 180.0, step_deg)} | {round(self.requested_deg, 6)}
        self.angles_deg = np.array(sorted(angles))
        radius = (min(height, width) - 1) / 2.0
        self.offsets_px = np.linspace(radius, -radius, samples)  # top of the L-mode first: the ray at the angle
        center_r, center_c = (height - 1) / 2.0, (width - 1) / 2.0
        theta = np.radians(self.angles_deg)[:, None]
        rows = np.clip(np.rint(center_r - self.offsets_px[None, :] * np.sin(theta)), 0, height - 1).astype(np.int64)
        cols = np.clip(np.rint(center_c + self.offsets_px[None, :] * np.cos(theta)), 0, width - 1).astype(np.int64)
        self.index = rows * width + cols  # [angles, samples] flat pixel indices
        self.gray: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []

    def add(self, image: np.ndarray, calcium: np.ndarray | None, labels: np.ndarray | None) -> None:
        self.gray.append(image.reshape(-1)[self.index])
        code = np.zeros(self.index.shape, np.uint8)
        if labels is not None:
            code |= np.minimum(labels.reshape(-1)[self.index], 3).astype(np.uint8)
        if calcium is not None:
            code |= (calcium.reshape(-1)[self.index] != 0).astype(np.uint8) * CALCIUM_BIT
        self.codes.append(code)

    def angle_index(self, angle_deg: float) -> int:
        return int(np.argmin(np.abs((self.angles_deg - float(angle_deg) % 180.0 + 90.0) % 180.0 - 90.0)))

    def calcium_counts(self) -> np.ndarray:
        """Calcium samples per angle over the whole pullback."""
        counts = np.zeros(len(self.angles_deg), np.int64)
        for code in self.codes:
            counts += ((code & CALCIUM_BIT) != 0).sum(axis=1)
        return counts

    def max_calcium_angle_deg(self) -> float | None:
        """The candidate angle whose cut crosses the most calcium (first on ties); None without calcium."""
        counts = self.calcium_counts()
        return None if counts.max(initial=0) == 0 else float(self.angles_deg[int(np.argmax(counts))])

    def cut(self, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """(gray, code) images [samples, frames] of the cut at the nearest candidate angle."""
        i = self.angle_index(angle_deg)
        return (np.stack([g[i] for g in self.gray], axis=1), np.stack([c[i] for c in self.codes], axis=1))


def resample_columns(frames: int, slabs_mm: np.ndarray | None, columns: int = 1600) -> tuple[np.ndarray, float]:
    """Frame index per output column on a uniform axis, and the axis length (mm, or frames without lengths): each
    column shows the frame whose slab contains the column's position."""
    if slabs_mm is None:
        count = min(frames, columns)
        return np.minimum((np.arange(count) + 0.5) * frames / count, frames - 1).astype(np.int64), float(frames)
    ends = np.cumsum(slabs_mm)
    length = float(ends[-1])
    count = min(max(frames, 400), columns)
    centres = (np.arange(count) + 0.5) * length / count
    return np.minimum(np.searchsorted(ends, centres, side="right"), frames - 1), length


def draw_lmode(ax, acc: LModeAccumulator, angle_deg: float, pixel_spacing_mm: float, slabs_mm: np.ndarray | None,
               lesions: Sequence[dict] = (), title: str = "") -> None:
    """Draw the cut at `angle_deg` on a matplotlib axes (module docstring)."""
    gray, code = acc.cut(angle_deg)
    columns, length = resample_columns(gray.shape[1], slabs_mm)
    gray, code = gray[:, columns], code[:, columns]
    radius_mm = float(acc.offsets_px[0]) * pixel_spacing_mm
    extent = (0.0, length, -radius_mm, radius_mm)
    rgb = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=2)
    calcium = (code & CALCIUM_BIT) != 0
    rgb[calcium] = 0.45 * rgb[calcium] + 0.55 * np.array([1.0, 0.13, 0.13])
    ax.imshow(rgb, extent=extent, aspect="auto", interpolation="nearest", origin="upper")
    y = np.linspace(radius_mm, -radius_mm, gray.shape[0])
    x = (np.arange(gray.shape[1]) + 0.5) * length / gray.shape[1]
    for name, mask in (("vessel", np.isin(code & 3, (1, 2))), ("lumen", (code & 3) == 1)):
        if mask.any() and not mask.all():
            ax.contour(x, y, mask.astype(np.float32), levels=[0.5], colors=COLOURS_HEX[name], linewidths=0.9)
    for lesion in lesions:
        start, end = ((lesion["start_mm"], lesion["end_mm"]) if slabs_mm is not None
                      else (lesion["first_frame"], lesion["last_frame"] + 1))
        ax.plot([start, end], [radius_mm * 0.97] * 2, color=COLOURS_HEX["superficial"], linewidth=4,
                solid_capstyle="butt")
        ax.text((start + end) / 2, 1.0, f"L{lesion['lesion']}", color="#e65100", ha="center", va="bottom",
                fontsize=8, fontweight="bold", transform=ax.get_xaxis_transform())
    ax.set_xlim(0, length)
    ax.set_ylim(-radius_mm, radius_mm)
    ax.set_xlabel("position along the pullback from its first frame (mm)" if slabs_mm is not None
                  else "frame number (no pullback geometry)")
    ax.set_ylabel(f"mm from catheter\n(up: {angle_deg:.0f}\N{DEGREE SIGN})", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9, loc="left", pad=10)


def cut_endpoints(shape: Sequence[int], angle_deg: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """((x, y) of the ray at the angle, (x, y) of the opposite end) of the cut in a frame, in pixels."""
    height, width = shape[0], shape[1]
    radius = (min(height, width) - 1) / 2.0
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    dx, dy = radius * math.cos(math.radians(angle_deg)), -radius * math.sin(math.radians(angle_deg))
    return (cx + dx, cy + dy), (cx - dx, cy - dy)
