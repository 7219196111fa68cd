"""Benchmark the exports: size on disk, and inference through Keras, the SavedModel and ONNX Runtime.

    python bench/bench_export.py [--archs unet_res deeplabv3] [--width 1.0] [--image-size 256] [--frame-size 500]
                                 [--batches 1 12] [--repeats 5]

For each architecture (the two-task calcium + wall-lumen model, random weights: speed does not depend on them):

* sizes: the weights, Keras' `model.export` SavedModel (which stores every variable twice), this package's
  SavedModel (`ivus_tf.export.export_savedmodel`) and `model.onnx`, with the time each export took;
* latency per batch, median (min-max) of `--repeats` calls after one warm-up call (batch 12: half the repeats):
  "Keras" runs the model alone on float32 [B, S, S, 1] already at model size (graph mode, `tf.function`);
  "SavedModel" and "ONNX Runtime" run the whole serving graph through `ivus_tf.export.load_exported` on raw uint8
  [B, F, F] frames (resize in, model, resize out, argmax), i.e. what the predict command pays.

Achieved GFLOP/s counts only the model's forward FLOPs (`ivus_tf.models.flops`), against the float32 peak measured
in the same run as a 4096x4096 matmul in TensorFlow. Prints markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)
from ivus_tf.core.tf_import import import_tensorflow  # noqa: E402

tf = import_tensorflow()


def _peak_gflops() -> float:
    return benchlib.tf_matmul_peak_gflops()


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: tracing, allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def bench_arch(arch: str, args, work: Path) -> tuple[dict, list[dict]]:
    import keras

    sizes, rows = _measure(arch, args, work)
    keras.backend.clear_session()  # after _measure returned: its model, traced function and engines are freed
    return sizes, rows


def _measure(arch: str, args, work: Path) -> tuple[dict, list[dict]]:
    from ivus_tf.export import export_onnx, load_exported, read_info
    from ivus_tf.models import build_model
    from ivus_tf.models.flops import count_flops

    size, frame = args.image_size, args.frame_size
    model = build_model(arch, ("calcium", "wall_lumen"), input_shape=(size, size, 1), width=args.width)
    gflop = count_flops(model)["total"] / 1e9
    start = time.perf_counter()
    model.export(str(work / f"{arch}_keras"), verbose=False)
    keras_export_s = time.perf_counter() - start
    keras_export_mb = _folder_mb(work / f"{arch}_keras")
    shutil.rmtree(work / f"{arch}_keras")
    start = time.perf_counter()
    version_dir = export_onnx(model, work / arch, version=1)
    export_s = time.perf_counter() - start
    info = read_info(version_dir)
    sizes = {"arch": arch, "params_m": model.count_params() / 1e6, "weights_mb": info["sizes_mb"]["weights"],
             "keras_export_mb": keras_export_mb, "keras_export_s": keras_export_s,
             "savedmodel_mb": info["sizes_mb"]["savedmodel"], "onnx_mb": info["sizes_mb"]["onnx"],
             "export_s": export_s,
             "onnx_check": info["onnx"]["check_against_tensorflow"]["max_abs_probability_difference"]}

    forward = tf.function(lambda x: model(x, training=False), jit_compile=False)
    engines = {"SavedModel": load_exported(version_dir, engine="tensorflow"),
               "ONNX Runtime": load_exported(version_dir, engine="onnxruntime")}
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        repeats = args.repeats if batch == 1 else max(2, args.repeats // 2)
        images = tf.constant(rng.random((batch, size, size, 1), dtype=np.float32))
        frames = rng.integers(0, 256, (batch, frame, frame), dtype=np.uint8)
        runs = {"Keras (model only)": ((lambda x=images: forward(x)["calcium"].numpy()), f"float32 {size}x{size}")}
        for name, exported in engines.items():
            runs[name] = ((lambda e=exported, x=frames, b=batch: e.predict(x, batch_size=b)), f"uint8 {frame}x{frame}")
        for name, (fn, input_text) in runs.items():
            times = _timed(fn, repeats)
            median = statistics.median(times)
            rows.append({"arch": arch, "engine": name, "input": input_text, "batch": batch,
                         "ms": 1e3 * median, "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
                         "fps": batch / median, "gflops": gflop * batch / median})
            print(f"  {arch} {name} batch {batch}: {1e3 * median:.0f} ms", file=sys.stderr, flush=True)
    return sizes, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["unet_res", "deeplabv3"])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--frame-size", type=int, default=500)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import keras
    import onnxruntime

    peak = _peak_gflops()
    work = Path(tempfile.mkdtemp(prefix="bench_export-"))
    try:
        results = [bench_arch(arch, args, work) for arch in args.archs]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"- machine: {platform.processor() or platform.machine()}, {_cores()} cores; TensorFlow {tf.__version__} "
          f"(CPU), Keras {keras.__version__}, ONNX Runtime {onnxruntime.__version__}, "
          f"Python {platform.python_version()}")
    print(f"- date: {datetime.date.today().isoformat()}")
    command = " ".join([".venv/bin/python bench/bench_export.py"] + sys.argv[1:])
    print(f"- command: `{command}`")
    print(f"- two-task models at width {args.width:g}, model input {args.image_size}x{args.image_size}; peak = "
          f"4096x4096 float32 matmul in TensorFlow, measured in this run: {peak:.0f} GFLOP/s\n")
    print("| arch | params (M) | weights (MB) | Keras model.export (MB, s) | ivus_tf SavedModel (MB) "
          "| model.onnx (MB) | SavedModel + ONNX export (s) | max abs ONNX - TF probability |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for sizes, _ in results:
        print(f"| {sizes['arch']} | {sizes['params_m']:.1f} | {sizes['weights_mb']:.1f} | "
              f"{sizes['keras_export_mb']:.1f} ({sizes['keras_export_s']:.0f} s) | {sizes['savedmodel_mb']:.1f} | "
              f"{sizes['onnx_mb']:.1f} | {sizes['export_s']:.0f} | {sizes['onnx_check']:.1e} |")
    print("\n| arch | engine | input | batch | ms per batch, median (min-max) | frames/s | model GFLOP/s | "
          "% of peak |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for _, rows in results:
        for r in rows:
            print(f"| {r['arch']} | {r['engine']} | {r['input']} | {r['batch']} | {r['ms']:.0f} "
                  f"({r['min_ms']:.0f}-{r['max_ms']:.0f}) | {r['fps']:.2f} | {r['gflops']:.0f} | "
                  f"{100 * r['gflops'] / peak:.0f}% |")
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
