"""Cost of the issue-13 input checks: record verification (first sha256 pass, then the cached stat pass) and the
stderr capture that catches corrupt JPEG data, per decoded frame.

    python bench/bench_checks.py [--frames 600] [--size 500]

Writes a records folder of `--frames` synthetic frames (one case per 20 frames) in a temporary folder, times
`verify_records` cold (hashing every file) and warm (size and mtime from the cache), and times `read_file` on a
JPEG and a PNG frame against a bare `cv2.imdecode` of the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import machine  # noqa: E402


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", type=int, default=500)
    args = parser.parse_args()
    from tfrecords_builder.images import read_file
    from tfrecords_builder.index import read_index, verify_records
    from tfrecords_builder.writer import write_records

    rng = np.random.default_rng(0)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = rng.normal(100, 40, (args.size, args.size)).clip(0, 255).astype(np.uint8)
        mask = (rng.random((args.size, args.size)) > 0.9).astype(np.uint8)
        frames = {f"case{c:03d}": [{"frame_id": str(i), "image": image, "calcium_mask": mask, "wall_lumen_mask": None,
                                    "pixel_spacing_mm": 0.02} for i in range(20)] for c in range(args.frames // 20)}
        write_records(frames, tmp / "records")
        index = read_index(tmp / "records")
        size_mb = sum(f.stat().st_size for f in (tmp / "records" / "cases").iterdir()) / 1e6
        start = time.perf_counter()
        verify_records(tmp / "records", index, tmp / "cache")
        cold = time.perf_counter() - start
        warm = best_of(lambda: verify_records(tmp / "records", index, tmp / "cache"), 5)
        stat = best_of(lambda: read_index(tmp / "records"), 5)
        print(f"records: {args.frames} frames of {args.size}x{args.size}, {len(frames)} files, {size_mb:.1f} MB")
        print(f"verify_records cold (sha256 of every file): {cold:.3f} s = {size_mb / cold:.0f} MB/s")
        print(f"verify_records warm (cached: a stat per file): {1000 * warm:.2f} ms")
        print(f"read_index with the size check: {1000 * stat:.2f} ms")
        for kind, extension in (("JPEG", ".jpg"), ("PNG", ".png")):
            path = tmp / f"frame{extension}"
            path.write_bytes(cv2.imencode(extension, image)[1].tobytes())
            data = path.read_bytes()
            bare = best_of(lambda data=data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), 50)
            checked = best_of(lambda path=path: read_file(path), 50)
            print(f"{kind} {args.size}x{args.size}: bare imdecode {1000 * bare:.2f} ms, read_file (end marker, "
                  f"stderr captured) {1000 * checked:.2f} ms, +{1000 * (checked - bare):.2f} ms per frame")


if __name__ == "__main__":
    main()
