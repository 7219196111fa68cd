"""Ground truth as annotators draw it: lumen, vessel (EEM) and the calcium's bright leading layer.

Annotators outline what they see. For calcium that is the bright leading layer, not the plate behind it (hidden
in its shadow; ../shared/IVUS_PRIMER.md), so the calcium label is the phantom's `layer`, never the hidden plate.
Each case has one annotator with a style: a small bias of the lumen and EEM contours (drawn on the inner or the
outer edge of the border), a smooth per-frame wobble of every contour, a tendency to draw the calcium band
thinner or thicker and its arc a little short or long. The magnitudes scale with the case's
`annotation_jitter_mm` (0 gives the exact anatomy). Labels never leave the wall: calcium lies between the drawn
lumen and the drawn EEM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfrecords_builder.phantom import anatomy as A
from tfrecords_builder.phantom.scanner import uniform


@dataclass(frozen=True)
class Annotator:
    jitter_mm: float
    lumen_bias_mm: float
    eem_bias_mm: float
    calcium_layer_scale: float
    calcium_arc_pad_deg: float


def sample_annotator(config, rng: np.random.Generator) -> Annotator:
    jitter = uniform(rng, config.annotation_jitter_mm)
    return Annotator(jitter_mm=jitter, lumen_bias_mm=float(rng.uniform(-1, 1) * jitter),
                     eem_bias_mm=float(rng.uniform(-1, 1) * jitter),
                     calcium_layer_scale=float(1 + rng.uniform(-5, 8) * jitter),
                     calcium_arc_pad_deg=float(rng.uniform(-60, 100) * jitter))


def _wobble(rng: np.random.Generator, rms_mm: float) -> np.ndarray:
    """A smooth closed-contour perturbation (harmonics 2-8 over phi) with the given RMS (mm)."""
    orders = np.arange(2, 9)
    amp = rng.standard_normal(orders.size) / orders
    out = np.sum(amp[:, None] * np.cos(orders[:, None] * A.PHI + rng.uniform(0, 2 * np.pi, orders.size)[:, None]), 0)
    return out * (rms_mm / (np.sqrt(np.mean(out ** 2)) + 1e-12))


@dataclass
class Drawn:
    """One frame's drawn contours over phi (vessel coordinates): lumen, EEM, calcium band start and thickness."""

    r_lumen: np.ndarray
    r_eem: np.ndarray
    calcium_start: np.ndarray | None
    calcium_thickness: np.ndarray | None


def draw(anat: A.FrameAnatomy, annotator: Annotator | None, rng: np.random.Generator | None,
         blur_mm: float = 0.0) -> Drawn:
    """The contours the case's annotator draws on this frame (the exact anatomy when `annotator` is None).

    The calcium band is drawn as seen: the bright layer widened by the echo's axial blur `blur_mm` (the scanner's
    axial resolution, FWHM), a little of it on the lumen side of the edge.
    """
    calcium = anat.deposits.get(A.CALCIUM)
    start, layer = None, None
    if calcium is not None:
        on = calcium["thickness"] > 0.02
        start = anat.r_lumen + calcium["offset"] - np.where(on, 0.4 * blur_mm, 0)
        layer = np.where(on, calcium["layer"] + 0.8 * blur_mm, 0)
    if annotator is None or annotator.jitter_mm <= 0:
        return Drawn(anat.r_lumen, anat.r_eem, start, layer)
    j = annotator.jitter_mm
    r_lumen = anat.r_lumen + annotator.lumen_bias_mm + _wobble(rng, 0.5 * j)
    r_eem = anat.r_eem + annotator.eem_bias_mm + _wobble(rng, 0.5 * j)
    if calcium is not None:
        pad = int(round(annotator.calcium_arc_pad_deg * A.N_PHI / 360))
        if pad:  # grow the drawn arc at its ends (from the neighbouring band) or shrink it
            shifts = range(-abs(pad), abs(pad) + 1)
            window = np.stack([np.roll(layer, s) for s in shifts])
            if pad > 0:
                nearest = window.argmax(0)
                starts = np.stack([np.roll(start, s) for s in shifts])[nearest, np.arange(A.N_PHI)]
                start = np.where(layer > 0, start, starts)
                layer = np.where(layer > 0, layer, window.max(0))
            else:
                layer = np.where(window.min(0) > 0, layer, 0)
        start = start + _wobble(rng, 0.25 * j)
        layer = np.where(layer > 0, np.maximum(layer * annotator.calcium_layer_scale + _wobble(rng, 0.25 * j),
                                               0.5 * layer), 0)
    return Drawn(r_lumen, np.maximum(r_eem, r_lumen + 0.05), start, layer)


def masks(anat: A.FrameAnatomy, x: np.ndarray, y: np.ndarray, drawn: Drawn | None = None):
    """Ground truth at points (mm): calcium (bool), wall_lumen (uint8: 0 background, 1 lumen, 2 vessel wall)."""
    drawn = drawn or draw(anat, None, None)
    _, _, rho, _, at = A.vessel_fields(anat, x, y)
    wall_lumen = np.where(rho < at(drawn.r_lumen), 1, np.where(rho < at(drawn.r_eem), 2, 0)).astype(np.uint8)
    if drawn.calcium_start is None:
        return np.zeros(rho.shape, bool), wall_lumen
    start, thickness = at(drawn.calcium_start), at(drawn.calcium_thickness)
    calcium = (thickness > 0.02) & (rho >= start) & (rho < start + thickness) & (wall_lumen == 2)
    return calcium, wall_lumen


def calcium_arc_deg(anat: A.FrameAnatomy) -> float:
    """The calcium arc of a frame as seen from the vessel centre (degrees; 0 without calcium)."""
    calcium = anat.deposits.get(A.CALCIUM)
    return 0.0 if calcium is None else 360.0 * float(np.mean(calcium["thickness"] > 0.02))
