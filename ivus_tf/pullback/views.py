"""The report's figures, drawn once per pullback with matplotlib (Agg, no display) and returned as PNG bytes:

- `profiles_png`: along the pullback (mm), the calcium arc and the superficial arc (with the score's 270 and 360
  degree lines), the lumen and vessel (EEM) areas, and the vessel diameter (with the score's 3.5 mm line); lesions
  shaded and labelled L1, L2, ...
- `lmode_png`: the L-mode cuts (`lmode`) at the requested angle and at the angle of maximum calcium;
- `frames_png`: the worst frames (maximum calcium arc, minimum lumen area) with contours - calcium red (its
  superficial part shaded orange), lumen yellow, vessel cyan -, zoomed to the vessel, the L-mode cut as a dashed
  line, and a 1 mm scale bar.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from ivus_tf.core.vocab import LUMEN
from ivus_tf.overlay import COLOURS_HEX
from ivus_tf.pullback.collect import KeptFrame
from ivus_tf.pullback.lmode import LModeAccumulator, cut_endpoints, draw_lmode

LESION_SHADE = "#ffcc80"
SUPERFICIAL_COLOUR = COLOURS_HEX["superficial"]
DPI = 110


def _figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1, **kwargs):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False, **kwargs)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _shade_lesions(ax, lesions: Sequence[dict], label: bool) -> None:
    for lesion in lesions:
        ax.axvspan(lesion["start_mm"], lesion["end_mm"], color=LESION_SHADE, alpha=0.45, linewidth=0, zorder=0)
        if label:
            ax.text((lesion["start_mm"] + lesion["end_mm"]) / 2, 1.0, f"L{lesion['lesion']}", ha="center",
                    va="bottom", transform=ax.get_xaxis_transform(), fontsize=8, fontweight="bold", color="#e65100")


def _top(*values) -> float:
    """Largest finite value among arrays and numbers (for axis limits)."""
    finite = [v[np.isfinite(v)] for v in map(np.atleast_1d, values)]
    return float(max((f.max() for f in finite if f.size), default=1.0))


def profiles_png(table: dict, positions_mm: np.ndarray, slabs_mm: np.ndarray, lesions: Sequence[dict],
                 arc_deg: float = 270.0, vessel_diameter_mm: float = 3.5) -> bytes:
    figure, axes = _figure(10.5, 6.2, 3, 1, sharex=True)
    x = positions_mm + slabs_mm / 2  # frame centres
    arc, areas, diameter = axes[0][0], axes[1][0], axes[2][0]
    arc.fill_between(x, 0, np.nan_to_num(table["calcium_arc_deg"]), color="#e53935", alpha=0.35, linewidth=0,
                     step="mid", label="calcium arc")
    arc.step(x, table["superficial_calcium_arc_deg"], where="mid", color="#e65100", linewidth=1.1,
             label="superficial calcium arc")
    for level in (arc_deg, 360.0):
        arc.axhline(level, color="0.4", linewidth=0.7, linestyle="--")
    arc.set_ylim(0, 380)
    arc.set_yticks([0, 90, 180, 270, 360])
    arc.set_ylabel("arc (\N{DEGREE SIGN})")
    arc.legend(loc="upper right", fontsize=7, framealpha=0.85)
    areas.plot(x, table["vessel_area_mm2"], color="#00838f", linewidth=1.0, label="vessel (EEM) area")
    areas.plot(x, table["lumen_area_mm2"], color="#b8860b", linewidth=1.0, label="lumen area")
    areas.set_ylabel("area (mm\N{SUPERSCRIPT TWO})")
    areas.set_ylim(0, 1.12 * _top(table["vessel_area_mm2"], table["lumen_area_mm2"], 1.0))
    areas.legend(loc="upper right", fontsize=7, framealpha=0.85)
    diameter.plot(x, table["vessel_diameter_mm"], color="#00838f", linewidth=1.0, label="vessel diameter")
    diameter.plot(x, table["lumen_diameter_mm"], color="#b8860b", linewidth=1.0, label="lumen diameter")
    diameter.axhline(vessel_diameter_mm, color="0.4", linewidth=0.7, linestyle="--")
    diameter.set_ylabel("diameter (mm)")
    diameter.set_ylim(0, 1.12 * _top(table["vessel_diameter_mm"], table["lumen_diameter_mm"], vessel_diameter_mm))
    diameter.legend(loc="upper right", fontsize=7, framealpha=0.85)
    diameter.set_xlabel("position along the pullback from its first frame (mm; a pullback runs distal to proximal)")
    diameter.set_xlim(0, float(positions_mm[-1] + slabs_mm[-1]))
    for i, row in enumerate(axes):
        row[0].grid(alpha=0.3, linewidth=0.5)
        _shade_lesions(row[0], lesions, label=i == 0)
    return _png(figure)


def lmode_png(acc: LModeAccumulator, angles_deg: Sequence[tuple[float, str]], pixel_spacing_mm: float,
              slabs_mm: np.ndarray | None, lesions: Sequence[dict]) -> bytes:
    figure, axes = _figure(10.5, 2.4 * len(angles_deg), len(angles_deg), 1)
    for (angle, title), row in zip(angles_deg, axes):
        draw_lmode(row[0], acc, angle, pixel_spacing_mm, slabs_mm, lesions, title)
    return _png(figure)


def _contours(ax, mask: np.ndarray, colour: str, width: float = 1.2) -> None:
    if mask is not None and mask.any():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=width)


def _scale_bar(ax, window, pixel_spacing_mm: float, length_mm: float = 1.0) -> None:
    r0, r1, c0, c1 = window
    pixels = length_mm / pixel_spacing_mm
    x0, y0 = c0 + (c1 - c0) * 0.95 - pixels, r0 + (r1 - r0) * 0.94
    ax.plot([x0, x0 + pixels], [y0, y0], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x0 + pixels / 2, y0 - (r1 - r0) * 0.025, f"{length_mm:g} mm", color="white", ha="center",
            va="bottom", fontsize=8, fontweight="bold")


def _window(frame: KeptFrame, margin: float = 0.25, min_mm: float = 3.0) -> tuple[float, float, float, float]:
    """(row0, row1, col0, col1): a square around the vessel (or calcium) with a margin, at least `min_mm` wide, so
    the reader sees the wall rather than the whole field of view; the whole frame without masks."""
    height, width = frame.image.shape
    masks = [m for m in (None if frame.labels is None else frame.labels != 0, frame.calcium) if m is not None]
    found = np.logical_or.reduce(masks) if masks else None
    if found is None or not found.any():
        return -0.5, height - 0.5, -0.5, width - 0.5
    rows, cols = np.flatnonzero(found.any(axis=1)), np.flatnonzero(found.any(axis=0))
    half = max(rows[-1] - rows[0], cols[-1] - cols[0], min_mm / frame.pixel_spacing_mm) * (0.5 + margin)
    half = min(half, max(height, width) / 2)
    centre_r, centre_c = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    return centre_r - half, centre_r + half, centre_c - half, centre_c + half


def frames_png(kept: Sequence[tuple[str, KeptFrame]], lmode_angle_deg: float | None, superficial_depth_mm: float,
               positions_mm: np.ndarray | None) -> bytes:
    from ivus_tf.pullback.calcium_score import superficial_calcium_mask

    figure, axes = _figure(4.0 * len(kept), 4.35, 1, len(kept))
    for (title, frame), row in zip(kept, axes[0]):
        ax = row
        ax.imshow(frame.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        lumen = None if frame.labels is None else frame.labels == LUMEN
        if frame.labels is not None:
            _contours(ax, frame.labels != 0, COLOURS_HEX["vessel"])
            _contours(ax, lumen, COLOURS_HEX["lumen"])
        if frame.calcium is not None:
            _contours(ax, frame.calcium, COLOURS_HEX["calcium"])
            superficial = None if lumen is None else superficial_calcium_mask(
                frame.calcium, lumen, frame.pixel_spacing_mm, superficial_depth_mm)
            if superficial is not None and superficial.any():
                overlay = np.zeros(frame.calcium.shape + (4,), np.float32)
                overlay[superficial] = (1.0, 0.6, 0.0, 0.38)  # the echo stays visible under it
                ax.imshow(overlay, interpolation="nearest")
        if lmode_angle_deg is not None:
            (x0, y0), (x1, y1) = cut_endpoints(frame.image.shape, lmode_angle_deg)
            ax.plot([x0, x1], [y0, y1], color="white", linewidth=0.8, linestyle=(0, (4, 3)), alpha=0.8)
        window = _window(frame)
        ax.set_xlim(window[2], window[3])
        ax.set_ylim(window[1], window[0])
        _scale_bar(ax, window, frame.pixel_spacing_mm)
        values = frame.values
        where = "" if positions_mm is None else f", {float(positions_mm[frame.index]):.1f} mm"
        lines = [f"{title}", f"frame {frame.frame_id}{where}"]
        details = []
        if math.isfinite(values.get("calcium_arc_deg", math.nan)):
            details.append(f"arc {values['calcium_arc_deg']:.0f}\N{DEGREE SIGN}")
        if math.isfinite(values.get("superficial_calcium_arc_deg", math.nan)):
            details.append(f"superficial {values['superficial_calcium_arc_deg']:.0f}\N{DEGREE SIGN}")
        if math.isfinite(values.get("lumen_area_mm2", math.nan)):
            details.append(f"lumen {values['lumen_area_mm2']:.2f} mm\N{SUPERSCRIPT TWO}")
        if math.isfinite(values.get("plaque_burden_percent", math.nan)):
            details.append(f"PB {values['plaque_burden_percent']:.0f}%")
        ax.set_title("\n".join(lines + ["  ".join(details)]), fontsize=8, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(figure)
