"""Benchmark of ivus_tf.metrics: milliseconds per 500 x 500 frame pair, against brute-force pairwise distances.

Frames are IVUS-like: a calcium arc (an annular sector in the vessel wall, 30-120 degrees, 0.2-0.6 mm thick) and
lumen / vessel blobs (ellipses with a wavy border), each with a "prediction" that is the target perturbed (arc
rotated and thickened, blob radii changed), at 0.026 mm per pixel. Timed per frame pair:

* `dice`, `average_hausdorff_mm` with points="all" and points="boundary", `evaluate_frame`, `wall_lumen_metrics`
  (lumen, vessel wall and vessel, each Dice + distance);
* large masks (a vessel filling the frame, ~170,000 points per mask, bounding box ~ the whole frame), the case
  that costs most; beside it the previous implementation (two full float64 scipy EDT maps on the crop), timed in
  the same run so the comparison holds on a shared machine;
* brute force: scipy.spatial.distance.cdist between the point sets (chunked to bound memory), the definition the
  tests check against. All points of a lumen/vessel mask are ~10^5 per frame (10^10 distances), so that row runs
  on frames downsampled by --brute-force-downsample and says its size.

Prints a markdown table with machine, date and command. Usage:

    .venv/bin/python bench/bench_metrics.py [--frames 20] [--repeats 5] [--brute-force-frames 3]
                                            [--brute-force-downsample 4]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import scipy
from scipy import ndimage
from scipy.spatial.distance import cdist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)
from ivus_tf.metrics import (  # noqa: E402
    average_hausdorff_mm,
    boundary,
    dice,
    evaluate_frame,
    wall_lumen_metrics,
)

SIZE = 500
PIXEL_SPACING_MM = 0.026


def synthetic_pair(rng: np.random.Generator, size: int = SIZE) -> dict:
    """Target and perturbed prediction: calcium masks and wall-lumen label maps (1 lumen, 2 vessel wall)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    centre = size / 2 + rng.uniform(-20, 20, 2)
    angle = np.arctan2(yy - centre[0], xx - centre[1])
    radius = np.hypot(yy - centre[0], xx - centre[1])

    def labels(lumen_r, vessel_r, wobble, phase):
        border = 1 + wobble * np.sin(3 * angle + phase)
        out = np.zeros((size, size), np.uint8)
        out[radius < vessel_r * size * border] = 2
        out[radius < lumen_r * size * border] = 1
        return out

    def arc(inner_r, thickness_px, start, span):
        in_sector = np.mod(angle - start, 2 * np.pi) < span
        return in_sector & (radius >= inner_r * size) & (radius < inner_r * size + thickness_px)

    lumen_r, vessel_r = rng.uniform(0.15, 0.22), rng.uniform(0.32, 0.42)
    wobble, phase = rng.uniform(0.02, 0.08), rng.uniform(0, 2 * np.pi)
    target_labels = labels(lumen_r, vessel_r, wobble, phase)
    pred_labels = labels(lumen_r * rng.uniform(0.93, 1.07), vessel_r * rng.uniform(0.95, 1.05), wobble,
                         phase + rng.uniform(-0.3, 0.3))
    inner = rng.uniform(lumen_r + 0.03, vessel_r - 0.06)
    thickness = rng.uniform(0.2, 0.6) / PIXEL_SPACING_MM
    start, span = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(30, 120))
    target_calcium = arc(inner, thickness, start, span)
    pred_calcium = arc(inner * rng.uniform(0.97, 1.03), thickness * rng.uniform(0.7, 1.3),
                       start + rng.uniform(-0.2, 0.2), span * rng.uniform(0.8, 1.2))
    return {"calcium": (pred_calcium, target_calcium), "labels": (pred_labels, target_labels)}


def large_pair(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A vessel filling the frame (radius 0.44-0.49 of the frame, wavy border) and a perturbed prediction."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)

    def disc(centre, radius, phase):
        angle = np.arctan2(yy - centre[0], xx - centre[1])
        return np.hypot(yy - centre[0], xx - centre[1]) < radius * size * (1 + 0.03 * np.sin(3 * angle + phase))

    centre, radius, phase = size / 2 + rng.uniform(-8, 8, 2), rng.uniform(0.44, 0.47), rng.uniform(0, 2 * np.pi)
    return (disc(centre + rng.uniform(-6, 6, 2), radius * rng.uniform(0.95, 1.04), phase + rng.uniform(-0.3, 0.3)),
            disc(centre, radius, phase))


def previous_mhd(pred, target, pixel_spacing_mm) -> float:
    """The implementation before issue 14: two full float64 scipy EDT maps on the masks' bounding box."""
    union = pred | target
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    pred, target = pred[box], target[box]
    spacing = np.broadcast_to(pixel_spacing_mm, 2)
    to_target = ndimage.distance_transform_edt(~target, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred, sampling=spacing)
    return max(float(to_target[pred].mean()), float(to_pred[target].mean()))


def brute_force_mhd(pred, target, pixel_spacing_mm, points="all", chunk=2048):
    """Modified Hausdorff distance from all pairwise distances (cdist), chunked to bound memory."""
    if points == "boundary":
        pred, target = boundary(pred), boundary(target)
    a, b = np.argwhere(pred) * pixel_spacing_mm, np.argwhere(target) * pixel_spacing_mm
    a_to_b, b_to_a = np.empty(len(a)), np.full(len(b), np.inf)
    for i in range(0, len(a), chunk):
        d = cdist(a[i:i + chunk], b)
        a_to_b[i:i + chunk] = d.min(axis=1)
        np.minimum(b_to_a, d.min(axis=0), out=b_to_a)
    return max(a_to_b.mean(), b_to_a.mean())


def time_ms(function, pairs, repeats) -> float:
    """Median over frame pairs of the best-of-`repeats` time of function(pred, target), in ms."""
    per_pair = []
    for pred, target in pairs:
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            function(pred, target)
            best = min(best, time.perf_counter() - start)
        per_pair.append(best)
    return 1e3 * float(np.median(per_pair))


def points(pairs, kind) -> int:
    select = boundary if kind == "boundary" else (lambda m: np.asarray(m) != 0)
    return int(np.mean([np.count_nonzero(select(m)) for pair in pairs for m in pair]))


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    return benchlib.cpu_model()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--brute-force-frames", type=int, default=3)
    parser.add_argument("--brute-force-downsample", type=int, default=4)
    args = parser.parse_args(argv)
    load_at_start = load_average()

    rng = np.random.default_rng(0)
    frames = [synthetic_pair(rng) for _ in range(args.frames)]
    calcium = [f["calcium"] for f in frames]
    lumen = [(p == 1, t == 1) for p, t in (f["labels"] for f in frames)]
    vessel = [(p != 0, t != 0) for p, t in (f["labels"] for f in frames)]
    labels = [f["labels"] for f in frames]
    s, n_bf, k = PIXEL_SPACING_MM, args.brute_force_frames, args.brute_force_downsample
    small = [(p[::k, ::k], t[::k, ::k]) for p, t in vessel[:n_bf]]

    rows = []  # (workload, size, points per mask, method, ms)
    for name, pairs in (("calcium arc", calcium), ("lumen", lumen), ("vessel (EEM)", vessel)):
        rows.append((name, SIZE, points(pairs, "all"), "dice", time_ms(dice, pairs, args.repeats)))
        for kind in ("all", "boundary"):
            rows.append((name, SIZE, points(pairs, kind), f"average_hausdorff_mm, points={kind}",
                         time_ms(lambda p, t, kind=kind: average_hausdorff_mm(p, t, s, points=kind), pairs,
                                 args.repeats)))
        rows.append((name, SIZE, points(pairs, "all"), "evaluate_frame (Dice + distance, all points)",
                     time_ms(lambda p, t: evaluate_frame(p, t, s), pairs, args.repeats)))
    large = [large_pair(rng) for _ in range(args.frames)]
    rows.append(("large masks", SIZE, points(large, "all"), "average_hausdorff_mm, points=all",
                 time_ms(lambda p, t: average_hausdorff_mm(p, t, s), large, args.repeats)))
    rows.append(("large masks", SIZE, points(large, "all"), "average_hausdorff_mm, anisotropic spacing (scipy)",
                 time_ms(lambda p, t: average_hausdorff_mm(p, t, (s, 1.01 * s)), large, args.repeats)))
    rows.append(("large masks", SIZE, points(large, "all"), "previous implementation (two float64 EDT maps)",
                 time_ms(lambda p, t: previous_mhd(p, t, s), large, args.repeats)))
    rows.append(("large masks", SIZE, points(large, "all"), "previous implementation, anisotropic spacing",
                 time_ms(lambda p, t: previous_mhd(p, t, (s, 1.01 * s)), large, args.repeats)))
    for p, t in large:
        assert np.isclose(average_hausdorff_mm(p, t, s), previous_mhd(p, t, s), rtol=1e-12, atol=0)
    rows.append(("wall-lumen label maps", SIZE, points(vessel, "all"),
                 "wall_lumen_metrics (lumen, wall, vessel; all points)",
                 time_ms(lambda p, t: wall_lumen_metrics(p, t, s), labels, args.repeats)))
    brute = [("calcium arc", calcium[:n_bf], SIZE, "all", s), ("calcium arc", calcium[:n_bf], SIZE, "boundary", s),
             ("vessel (EEM)", vessel[:n_bf], SIZE, "boundary", s),
             ("vessel (EEM)", small, SIZE // k, "all", s * k),
             ("large masks", [(p[::k, ::k], t[::k, ::k]) for p, t in large[:n_bf]], SIZE // k, "all", s * k)]
    for name, pairs, size, kind, spacing in brute:
        fast = time_ms(lambda p, t, spacing=spacing, kind=kind: average_hausdorff_mm(p, t, spacing, points=kind),
                       pairs, args.repeats)
        slow = time_ms(lambda p, t, spacing=spacing, kind=kind: brute_force_mhd(p, t, spacing, points=kind), pairs, 1)
        for p, t in pairs:
            assert np.isclose(average_hausdorff_mm(p, t, spacing, points=kind), brute_force_mhd(p, t, spacing, kind),
                              rtol=1e-12, atol=0)
        rows.append((name, size, points(pairs, kind), f"brute force (cdist), points={kind}", slow,
                     f"average_hausdorff_mm on the same frames: {fast:.2f} ms (brute force / EDT = {slow / fast:.1f})"))

    command = shlex.join([".venv/bin/python", "bench/bench_metrics.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"- machine: {machine()}; Python {platform.python_version()}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, OpenCV {cv2.__version__}")
    print(f"- load average (1, 5, 15 min) at the start: {load_at_start}")
    print(f"- load average (1, 5, 15 min) at the end: {load_average()} "
          f"on {benchlib.usable_cores()} usable cores")
    print(f"- date: {datetime.date.today().isoformat()}")
    print(f"- command: `{command}`")
    print(f"- data: {args.frames} synthetic frame pairs at {SIZE}x{SIZE}, {PIXEL_SPACING_MM} mm/pixel; median over "
          f"frames of the best of {args.repeats} runs (brute force: {n_bf} frames, 1 run)\n")
    print("| workload | size | points per mask | function | ms per frame pair | note |")
    print("|---|---:|---:|---|---:|---|")
    for name, size, npoints, method, ms, *note in rows:
        print(f"| {name} | {size}x{size} | {npoints:,} | {method} | {ms:.2f} | {note[0] if note else ''} |")


if __name__ == "__main__":
    main()
