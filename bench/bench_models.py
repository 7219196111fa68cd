"""Benchmark the models: train-step throughput, inference latency, peak memory, FLOPs against the CPU's peak.

    python bench/bench_models.py [--archs unet_res deeplabv3] [--batch-sizes 2 12] [--image-size 256]
                                 [--steps 3] [--xla] [--width 1.0]

Each measurement runs in its own process (so peak memory is that of one configuration). The models are the
two-task (calcium + wall-lumen) models at full width with the generalized Dice loss and Adam, float32, graph mode;
`--xla` adds the same with `jit_compile=True`. FLOPs are counted from the layer shapes (`ivus_tf.models.flops`);
a training step is taken as 3x the forward FLOPs. The machine's float32 peak is measured in the same run as the
throughput of a 4096x4096 matmul. Prints markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import statistics
import subprocess
import sys
import time

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)


def _peak_gflops() -> float:
    return benchlib.tf_matmul_peak_gflops()


def _child(args) -> dict:
    import numpy as np

    from ivus_tf.core.tf_import import import_tensorflow

    import_tensorflow()
    import keras

    from ivus_tf.losses import GeneralizedDiceLoss, multitask_loss_weights
    from ivus_tf.models import build_model
    from ivus_tf.models.flops import count_flops

    size, batch = args.image_size, args.batch
    model = build_model(args.arch, input_shape=(size, size, 1), width=args.width)
    flops = count_flops(model)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 1), dtype=np.float32)
    result = {"arch": args.arch, "batch": batch, "params": model.count_params(), "forward_gflops": flops["total"] / 1e9}
    if args.mode == "train":
        y = {"calcium": rng.integers(0, 2, (batch, size, size)).astype(np.int32),
             "wall_lumen": rng.integers(0, 3, (batch, size, size)).astype(np.int32)}
        w = {task: np.ones((batch,), np.float32) for task in y}
        model.compile(optimizer=keras.optimizers.Adam(2e-4),
                      loss={task: GeneralizedDiceLoss() for task in y}, loss_weights=multitask_loss_weights(1.0),
                      jit_compile=args.xla)
        for _ in range(2):
            model.train_on_batch(x, y, sample_weight=w)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            model.train_on_batch(x, y, sample_weight=w)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        result.update(xla=args.xla, step_s=seconds, images_per_s=batch / seconds,
                      achieved_gflops=3 * flops["total"] * batch / seconds / 1e9)
    else:
        for _ in range(2):
            model.predict_on_batch(x)
        times = []
        for _ in range(max(args.steps, 5)):
            start = time.perf_counter()
            model.predict_on_batch(x)
            times.append(time.perf_counter() - start)
        result.update(latency_ms=1000 * statistics.median(times))
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def _run(arch, mode, batch, args, xla=False) -> dict:
    command = [sys.executable, __file__, "--child", "--arch", arch, "--mode", mode, "--batch", str(batch),
               "--image-size", str(args.image_size), "--steps", str(args.steps), "--width", str(args.width)]
    if xla:
        command.append("--xla")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _machine() -> str:
    return benchlib.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["unet_res", "deeplabv3"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 12])
    parser.add_argument("--inference-batch-sizes", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--xla", action="store_true", help="also time jit_compile=True (slow on CPU)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return

    peak = _peak_gflops()
    print(f"\nMachine: {_machine()}; date {datetime.date.today()}; command: python bench/bench_models.py "
          f"{' '.join(sys.argv[1:])}")
    print(f"Measured float32 peak (4096x4096 matmul, same run): {peak:.0f} GFLOP/s\n")
    print("| arch | params (M) | forward GFLOP/image | batch | XLA | step (s) | images/s | achieved GFLOP/s | "
          "% of peak | peak RSS (GB) |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for arch in args.archs:
        for batch in args.batch_sizes:
            for xla in ([False, True] if args.xla else [False]):
                r = _run(arch, "train", batch, args, xla)
                print(f"| {arch} | {r['params'] / 1e6:.1f} | {r['forward_gflops']:.1f} | {batch} | "
                      f"{'on' if xla else 'off'} "
                      f"| {r['step_s']:.2f} | {r['images_per_s']:.2f} | {r['achieved_gflops']:.0f} | "
                      f"{100 * r['achieved_gflops'] / peak:.0f}% | {r['peak_rss_gb']:.1f} |", flush=True)
    print("\n| arch | batch | inference latency (ms) | ms per image | peak RSS (GB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for arch in args.archs:
        for batch in args.inference_batch_sizes:
            r = _run(arch, "infer", batch, args)
            print(f"| {arch} | {batch} | {r['latency_ms']:.0f} | {r['latency_ms'] / batch:.0f} | "
                  f"{r['peak_rss_gb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
