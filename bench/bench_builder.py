"""Benchmark the data builder: phantom generation and manifest -> TFRecords, frames per second.

    python bench/bench_builder.py [--cases 6] [--frames-per-case 10] [--workers 1 2]

Prints a markdown table (machine, date, command) for BENCHMARKS.md. Frames are 500x500 (the default phantom).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)


def machine() -> str:
    return benchlib.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--frames-per-case", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from ivus_tf.core.tf_import import import_tensorflow
    from tfrecords_builder.build import build_records
    from tfrecords_builder.phantom import generate_dataset

    import_tensorflow()  # once, outside the timings (about 3 s)

    frames = args.cases * args.frames_per_case
    rows = []
    work = Path(tempfile.mkdtemp(prefix="ivus-bench-"))
    try:
        for workers in args.workers:
            out = work / f"phantom-{workers}"
            start = time.perf_counter()
            generate_dataset(out, cases=args.cases, frames_per_case=args.frames_per_case, workers=workers)
            rows.append((f"phantom 500x500, {workers} worker(s)", frames, time.perf_counter() - start))
        manifest = work / f"phantom-{args.workers[0]}" / "manifest.csv"
        start = time.perf_counter()
        build_records(manifest, work / "records")
        rows.append(("build: manifest -> TFRecords (PNG decode, validate, encode, sha256)", frames,
                     time.perf_counter() - start))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nMachine: {machine()}; date {datetime.date.today()}; command: python bench/{Path(__file__).name} "
          f"{' '.join(sys.argv[1:])}\n")
    print("| stage | frames | seconds | frames/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, count, seconds in rows:
        print(f"| {name} | {count} | {seconds:.1f} | {count / seconds:.1f} |")


if __name__ == "__main__":
    main()
