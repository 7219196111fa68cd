"""Benchmark the data builder: phantom generation and manifest -> TFRecords, frames per second.

    python bench/bench_builder.py [--cases 6] [--frames-per-case 10] [--workers 1 2]
        [--presets randomized shifted default]

Prints a markdown table (machine, date, command) for BENCHMARKS.md: phantom generation per preset (frame sizes
vary per case in `randomized` (256-512 px) and `shifted` (576-640 px); `default` is 500x500) with 1 and N workers,
then the records build. "CPU s" is the generating processes' CPU time, the honest cost on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)


def machine() -> str:
    return benchlib.machine()


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker processes)."""
    own, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--frames-per-case", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--presets", nargs="+", default=["randomized", "shifted", "default"])
    args = parser.parse_args()

    from ivus_tf.core.tf_import import import_tensorflow
    from tfrecords_builder.build import build_records
    from tfrecords_builder.phantom import generate_dataset

    import_tensorflow()  # once, outside the timings (about 3 s)

    frames = args.cases * args.frames_per_case
    rows = []
    work = Path(tempfile.mkdtemp(prefix="ivus-bench-"))
    try:
        for preset in args.presets:
            for workers in args.workers:
                out = work / f"phantom-{preset}-{workers}"
                start, cpu = time.perf_counter(), cpu_seconds()
                info = generate_dataset(out, cases=args.cases, frames_per_case=args.frames_per_case, workers=workers,
                                        preset=preset)
                sizes = [c["render"]["scanner"]["image_size"] for c in info["cases"].values()]
                rows.append((f"phantom `{preset}` ({min(sizes)}-{max(sizes)} px, mean {sum(sizes) / len(sizes):.0f}), "
                             f"{workers} worker(s)", frames, time.perf_counter() - start, cpu_seconds() - cpu))
        manifest = work / f"phantom-{args.presets[0]}-{args.workers[0]}" / "manifest.csv"
        start, cpu = time.perf_counter(), cpu_seconds()
        build_records(manifest, work / "records")
        rows.append((f"build: `{args.presets[0]}` manifest -> TFRecords (PNG decode, validate, encode, sha256)", frames,
                     time.perf_counter() - start, cpu_seconds() - cpu))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nMachine: {machine()}; date {datetime.date.today()}; command: python bench/{Path(__file__).name} "
          f"{' '.join(sys.argv[1:])}\n")
    print("| stage | frames | wall s | frames/s | CPU s | frames per CPU s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, count, seconds, cpu in rows:
        print(f"| {name} | {count} | {seconds:.1f} | {count / seconds:.1f} | {cpu:.1f} | {count / cpu:.1f} |")


if __name__ == "__main__":
    main()
