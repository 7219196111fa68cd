"""Render docs/postprocess_example.png: a messy prediction before and after `ivus_tf.postprocess`, with the arc.

    python tools/render_postprocess_figure.py --out docs/postprocess_example.png [--seed 0]

The "prediction" is a phantom frame's ground truth spoiled the ways networks spoil it: the calcium cut into
fragments by thin gaps, a calcium speck in the lumen (guidewire-like), a bright blob beyond the EEM called calcium,
tiny calcium islands, a second lumen blob in the wall, the catheter left out of the lumen, a hole in the vessel and
a stray vessel island. Left: as predicted, arc = exact union of the fragments; right: cleaned, arc bridged.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from scipy import ndimage

from ivus_tf.measurements import frame_measurements
from ivus_tf.overlay import render_overlay
from ivus_tf.postprocess import PRESETS, postprocess_frame
from tfrecords_builder.phantom import PRESETS as PHANTOM_PRESETS
from tfrecords_builder.phantom import render_case_frames


def pick_frame(seed: int):
    """The first phantom frame whose calcium arc is between 100 and 220 degrees."""
    config = PHANTOM_PRESETS["default"]
    for case in range(12):
        for _, _, image, calcium, labels in render_case_frames(config, seed, case, 8):
            if calcium.any() and 100 < frame_measurements(calcium, labels, config.pixel_spacing_mm,
                                                          arc_gap_deg=0)["calcium_arc_deg"] < 220:
                return image, calcium, labels.astype(np.uint8), config.pixel_spacing_mm
    raise SystemExit("no frame with a 100-220 degree calcium arc in the first 12 cases")


def disc(shape, centre, radius):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(rows - centre[0], cols - centre[1]) < radius


def spoil(calcium, labels, rng):
    """The truth with the errors of the module docstring."""
    shape = labels.shape
    rows, cols = np.nonzero(labels == 1)
    centre = rows.mean(), cols.mean()
    angle = np.degrees(np.arctan2(*(np.mgrid[:shape[0], :shape[1]] - np.array(centre)[:, None, None]))) % 360
    calcium = calcium.copy()
    angles = np.sort(np.unique(np.round(angle[calcium], 1)))
    gaps = np.diff(np.concatenate([angles, angles[:1] + 360]))
    start = angles[(np.argmax(gaps) + 1) % len(angles)]  # the arc begins after its largest empty sector
    span = 360 - gaps.max()
    for cut in np.arange(start + 25, start + span - 15, 30):  # thin gaps every 30 degrees along the arc
        calcium &= ~(((angle - cut) % 360) < 6)
    labels = labels.copy()
    image_centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    labels[disc(shape, image_centre, 22) & (labels == 1)] = 2  # the catheter left out of the lumen
    wall = np.argwhere(labels == 2)
    blob = wall[rng.integers(len(wall))]
    labels[disc(shape, blob, 14) & (labels == 2)] = 1  # a second lumen blob in the wall
    vessel_rows, vessel_cols = np.nonzero(labels != 0)
    far = (vessel_rows.min() - 40, vessel_cols.mean())
    labels[disc(shape, far, 18)] = 2  # a stray vessel island
    inner_wall = np.argwhere(ndimage.distance_transform_edt(labels == 2) > 12)
    labels[disc(shape, inner_wall[rng.integers(len(inner_wall))], 8)] = 0  # a hole in the vessel wall
    lumen = np.argwhere(labels == 1)
    calcium |= disc(shape, lumen[rng.integers(len(lumen))], 5)  # a speck in the lumen
    calcium |= disc(shape, (vessel_rows.max() + 45, vessel_cols.mean()), 10)  # a bright blob beyond the EEM
    for _ in range(4):  # tiny islands in the wall
        calcium |= disc(shape, wall[rng.integers(len(wall))], 1.5)
    return calcium, labels


def panel(image, calcium, labels, spacing, title, arc_gap_deg):
    values = frame_measurements(calcium, labels, spacing, arc_gap_deg=arc_gap_deg)
    text = f"{title}: Ca arc {values['calcium_arc_deg']:.0f} deg, PB {values['plaque_burden_percent']:.0f}%"
    overlay = render_overlay(image, {"calcium": calcium, "wall_lumen": labels}, text=text, legend=True)
    return cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)  # written with cv2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/postprocess_example.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    image, calcium, labels, spacing = pick_frame(args.seed)
    messy_calcium, messy_labels = spoil(calcium, labels, np.random.default_rng(args.seed))
    clean_calcium, clean_labels = postprocess_frame(messy_calcium, messy_labels, spacing, PRESETS["default"])
    truth = frame_measurements(calcium, labels, spacing, arc_gap_deg=0)
    print(f"truth: arc {truth['calcium_arc_deg']:.1f} deg, plaque burden {truth['plaque_burden_percent']:.1f}%")
    for name, (c, lab, gap) in {"raw": (messy_calcium, messy_labels, 0), "cleaned": (clean_calcium, clean_labels, 20),
                                "cleaned, unbridged": (clean_calcium, clean_labels, 0)}.items():
        m = frame_measurements(c, lab, spacing, arc_gap_deg=gap)
        print(f"{name}: arc {m['calcium_arc_deg']:.1f} deg, plaque burden {m['plaque_burden_percent']:.1f}%")
    figure = np.concatenate([panel(image, messy_calcium, messy_labels, spacing, "predicted", 0),
                             np.full((image.shape[0], 8, 3), 255, np.uint8),
                             panel(image, clean_calcium, clean_labels, spacing, "cleaned + bridged", 20)], axis=1)
    if not cv2.imwrite(args.out, figure, [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_FILTERED]):
        raise SystemExit(f"cannot write {args.out}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
