"""What the pullback report adds to predict: per-frame cost of `PullbackCollector.add` (superficial arc, L-mode
lines, worst frames) beside the existing per-frame measurements, its memory, and the once-per-pullback figure time.

    python bench/bench_report.py [--frames 1000] [--size 500]

No model: synthetic 500 x 500 frames with a lumen, a vessel and a calcium sector (most frames calcified, the
worst case for the superficial arc). Prints one line per number.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine  # noqa: E402


def frames(count: int, size: int):
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - size / 2, cols - size / 2)
    angle = np.degrees(np.arctan2(rows - size / 2, cols - size / 2)) % 360
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size), dtype=np.uint8)
    for i in range(count):
        lumen_r = size * (0.2 + 0.02 * np.sin(i / 30))
        labels = np.zeros((size, size), np.uint8)
        labels[radius < size * 0.42] = 2
        labels[radius < lumen_r] = 1
        calcium = ((radius > lumen_r + 3) & (radius < lumen_r + 25) & (angle < 60 + (i % 300))).astype(np.uint8)
        if i % 5 == 0:
            calcium[:] = 0
        yield image, calcium, labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=500)
    args = parser.parse_args()
    from ivus_tf.measurements import frame_measurements
    from ivus_tf.pullback.assemble import ReportSettings, write_report
    from ivus_tf.pullback.collect import PullbackCollector
    from ivus_tf.pullback.geometry import resolve_geometry
    from ivus_tf.pullback_io import Frame

    spacing = 10.0 / args.size
    collector = PullbackCollector("bench", resolve_geometry(args.frames, 0.5, 30.0), 0.5, 0.0)
    measure = add = 0.0
    tracemalloc.start()
    for i, (image, calcium, labels) in enumerate(frames(args.frames, args.size)):
        frame = Frame("bench", f"{i:05d}", f"{i:05d}", image, spacing, "bench")
        start = time.perf_counter()
        values = frame_measurements(calcium, labels, spacing)
        middle = time.perf_counter()
        collector.add(frame, calcium, labels, values)
        end = time.perf_counter()
        measure, add = measure + middle - start, add + end - middle
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"machine: {machine()}")
    print(f"frames: {args.frames} of {args.size}x{args.size}, 80% with calcium")
    print(f"frame_measurements (existing): {1000 * measure / args.frames:.2f} ms/frame")
    print(f"PullbackCollector.add (report): {1000 * add / args.frames:.2f} ms/frame")
    print(f"memory held after streaming (L-mode lines, table, worst frames): {held / 2**20:.1f} MiB "
          f"({held / args.frames / 1024:.1f} KiB/frame; a frame is {args.size * args.size / 1024:.0f} KiB)")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_report(Path(folder), {"bench": collector}, ReportSettings(), {"input": "synthetic"})
        print(f"report figures + html + json, once: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
