"""Benchmark of the training input pipeline: frames/s at S x S with augmentation, by tf.data thread count.

Writes a records folder of N synthetic 500 x 500 frames whose PNGs cost about what real IVUS frames cost to
decode (speckle texture inside a circular field of view, so the PNG is nearly incompressible there; masks are
flat shapes), half carrying both labels and half only wall-lumen labels, then for each tf.data private thread
pool size measures the training dataset (multi-task mixing, flips + rotation, batch 12 by default; with
`--augmentation appearance` also zoom and the appearance transforms of `ivus_tf.data.appearance` at their defaults):

* first pass: from iterator creation until N/B batches (one epoch of both streams: parse, PNG decode, resize,
  cache fill, shuffle, augmentation); the record files are in the OS page cache, so this is decode cost, not disk;
* steady state: the following batches, served from the in-memory cache (augmentation only).

Prints a markdown table with machine, date and command. Usage:

    .venv/bin/python bench/bench_pipeline.py [--frames 480] [--image-size 256] [--batch-size 12] [--threads 1 2]
                                            [--steady-batches 300] [--repeats 3]
                                            [--augmentation flips_rotations|appearance]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)
from ivus_tf.core.tf_import import import_tensorflow  # noqa: E402
from ivus_tf.data.pipeline import PipelineConfig, make_train_dataset  # noqa: E402
from tfrecords_builder.writer import write_records  # noqa: E402

tf = import_tensorflow()
AUGMENTATIONS = {"flips_rotations": "flips + rotation",
                 "appearance": "flips + rotation + appearance augmentation (defaults of ivus_tf.augment_config)"}


def speckle_frame(rng: np.random.Generator, index: int, size: int = 500, wall_lumen_only: bool = False) -> dict:
    """One IVUS-like frame: Rayleigh speckle (slightly smoothed) under a radial profile, dark outside the FOV."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    centre = (size - 1) / 2
    radius = np.hypot(yy - centre, xx - centre)
    lumen_r, wall_r = rng.uniform(0.15, 0.25) * size, rng.uniform(0.32, 0.42) * size
    profile = np.where(radius < lumen_r, 25.0, np.where(radius < wall_r, 90.0, 55.0)) * np.exp(-radius / size)
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, (size, size)).astype(np.float32), (0, 0), 0.7)
    image = np.clip(profile * speckle * 1.6, 0, 255)
    image[radius > size / 2] = 0
    wall_lumen = np.where(radius < lumen_r, 1, np.where(radius < wall_r, 2, 0)).astype(np.uint8)
    angle = np.arctan2(yy - centre, xx - centre)
    calcium = ((wall_lumen == 2) & (np.abs(angle - rng.uniform(-2, 2)) < 0.5)).astype(np.uint8)
    image[calcium > 0] = np.clip(image[calcium > 0] + 120, 0, 255)
    return {"frame_id": str(index), "image": image.astype(np.uint8), "pixel_spacing_mm": 0.026,
            "calcium_mask": None if wall_lumen_only else calcium, "wall_lumen_mask": wall_lumen}


def build_records(out_dir: Path, frames: int, frames_per_case: int = 24) -> int:
    """Write the synthetic records folder; return the mean image PNG size in bytes."""
    rng = np.random.default_rng(0)
    cases, png_bytes = {}, []
    for i in range(frames):
        frame = speckle_frame(rng, i, wall_lumen_only=i % 2 == 1)
        png_bytes.append(len(cv2.imencode(".png", frame["image"])[1])) if i < 16 else None
        cases.setdefault(f"case{i // frames_per_case:03d}", []).append(frame)
    write_records(cases, out_dir)
    return int(np.mean(png_bytes))


def measure(records: Path, case_ids: list[str], config: PipelineConfig, threads: int, frames: int,
            steady_batches: int) -> tuple[float, float, float, float]:
    """(dataset construction s, first-pass frames/s, steady-state frames/s, steady-state CPU ms per frame) for a
    fresh training dataset. CPU time (all threads of this process) is what a busy shared machine distorts least."""
    start = time.perf_counter()
    dataset = make_train_dataset(records, case_ids, config)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    dataset = dataset.with_options(options)
    build = time.perf_counter() - start
    first_batches = -(-frames // config.batch_size)
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in range(first_batches):
        next(iterator)
    first = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steady_batches):
        next(iterator)
    steady, cpu = time.perf_counter() - start, time.process_time() - cpu
    frames_timed = steady_batches * config.batch_size
    return build, first_batches * config.batch_size / first, frames_timed / steady, 1000 * cpu / frames_timed


def _spread(values: list[float]) -> str:
    """Median, with the range when there are several runs."""
    median = float(np.median(values))
    return f"{median:.0f}" if len(values) == 1 else f"{median:.0f} ({min(values):.0f}-{max(values):.0f})"


def machine() -> str:
    return (f"{benchlib.cpu_model()}, {benchlib.usable_cores()} cores usable, TensorFlow {tf.__version__}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=480, help="synthetic 500x500 frames to write (default 480)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--steady-batches", type=int, default=300, help="batches timed after the first pass")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="private_threadpool_size values")
    parser.add_argument("--repeats", type=int, default=3, help="runs per thread count (median and range shown)")
    parser.add_argument("--augmentation", choices=sorted(AUGMENTATIONS), default="flips_rotations",
                        help="flips_rotations (the paper's) or appearance (nnU-Net-style, at its default settings)")
    args = parser.parse_args(argv)

    config = PipelineConfig(image_size=args.image_size, batch_size=args.batch_size,
                            appearance_augmentation=args.augmentation == "appearance")
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        records = Path(tmp) / "records"
        start = time.perf_counter()
        png_bytes = build_records(records, args.frames)
        print(f"wrote {args.frames} frames in {time.perf_counter() - start:.1f} s "
              f"(mean image PNG {png_bytes / 1024:.0f} KiB)", file=sys.stderr)
        case_ids = sorted(p.stem for p in (records / "cases").glob("*.tfrecord"))
        make_train_dataset(records, case_ids, config)  # one-time TF graph/runtime set-up, not timed
        rows, builds = [], []
        for threads in args.threads:
            runs = [measure(records, case_ids, config, threads, args.frames, args.steady_batches)
                    for _ in range(args.repeats)]
            builds += [run[0] for run in runs]
            cpu_ms = [r[3] for r in runs]
            rows.append(f"| {threads} | {_spread([r[1] for r in runs])} | {_spread([r[2] for r in runs])} | "
                        f"{np.median(cpu_ms):.2f} ({min(cpu_ms):.2f}-{max(cpu_ms):.2f}) |")
            print(rows[-1], file=sys.stderr)

    print(f"## Input pipeline: training batches at {args.image_size}x{args.image_size}, "
          f"{AUGMENTATIONS[args.augmentation]}, batch {args.batch_size}, calcium/wall-lumen mixing\n")
    print(f"- machine: {machine()}")
    print(f"- load average before / after: {load_before} / {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    python = os.path.relpath(sys.executable)
    python = sys.executable if python.startswith("..") else python
    print(f"- command: `{' '.join(shlex.quote(a) for a in [python, *sys.argv])}`")
    print(f"- data: {args.frames} synthetic 500x500 speckle frames (mean image PNG {png_bytes / 1024:.0f} KiB), "
          f"dataset construction (label scan + graph) {np.median(builds):.2f} s")
    print(f"- first pass = parse + PNG decode + resize + cache fill + augmentation over {args.frames} frames; "
          f"steady state = {args.steady_batches} batches from the cache; median (range) of {args.repeats} runs\n")
    print("| tf.data threads | first pass (frames/s) | steady state (frames/s) | steady state CPU ms/frame |")
    print("|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
