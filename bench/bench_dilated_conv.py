"""Micro-benchmark of dilated 3x3 convolutions: keras.layers.Conv2D vs ivus_tf's AtrousConv2D (TensorFlow backend).

DeepLabV3's ASPP at output stride 8 on a 256x256 frame: input (2, 32, 32, 2048), kernel 3x3x2048x256, "same"
padding, rates 1/6/12/24/36. For each rate and layer, times in graph mode (tf.function, no XLA):

* forward: the convolution alone;
* gradient: forward + gradients with respect to the input and the kernel (what a training step runs).

Both layers share one kernel; the table also shows the largest output difference between them. GFLOP/s counts
only the taps that land inside the feature map (2 * B * Cin * Cout * sum over the 9 taps of the output positions
whose tap is in bounds; x3 for forward + gradient): taps on zero padding are no work a good kernel must do, and at
rate >= 32 on a 32x32 map only the centre tap is left. "of peak" divides by the best fp32 matmul rate measured on
the same cores. Median of --repeats runs after
--warmup runs. Prints a markdown table with machine, date and command. Usage:

    .venv/bin/python bench/bench_dilated_conv.py [--rates 1 6 12 24 36] [--repeats 5] [--warmup 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivus_tf.core.tf_import import import_tensorflow  # noqa: E402

tf = import_tensorflow()

import keras  # noqa: E402

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)
from ivus_tf.models.layers import AtrousConv2D, native_dilated_conv_available  # noqa: E402


def machine() -> str:
    return (f"{benchlib.cpu_model()}, {benchlib.usable_cores()} cores usable, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}, TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}")


def median_ms(fn, args, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        np.asarray(result[0] if isinstance(result, (tuple, list)) else result)  # wait for the value
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def peak_gflops(warmup: int, repeats: int, n: int = 3072) -> float:
    a = tf.random.normal((n, n))
    matmul = tf.function(lambda a: tf.matmul(a, a))
    for _ in range(warmup):
        matmul(a)
    best = min(timed(matmul, a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args).numpy()
    return time.perf_counter() - start


def useful_gflop(batch: int, height: int, width: int, cin: int, cout: int, rate: int) -> float:
    """Multiply-adds x2 of a 3x3 'same' convolution at `rate`, counting only taps inside the input."""
    inside = sum(max(0, height - abs(dy) * rate) * max(0, width - abs(dx) * rate)
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return 2 * batch * inside * cin * cout / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[1, 6, 12, 24, 36])
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 32, 32, 2048], metavar=("B", "H", "W", "C"))
    parser.add_argument("--filters", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    batch, height, width, cin = args.shape
    x = tf.random.normal(args.shape, seed=1)
    peak = peak_gflops(args.warmup, args.repeats)
    rows = []
    for rate in args.rates:
        layers = {"keras Conv2D": keras.layers.Conv2D(args.filters, 3, padding="same", dilation_rate=rate),
                  "AtrousConv2D": AtrousConv2D(args.filters, 3, padding="same", dilation_rate=rate)}
        for layer in layers.values():
            layer.build(x.shape)
        layers["AtrousConv2D"].set_weights(layers["keras Conv2D"].get_weights())
        outputs, cells = [], []
        for layer in layers.values():
            forward = tf.function(lambda x, layer=layer: layer(x))

            @tf.function
            def gradient(x, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x)
                    loss = tf.reduce_sum(y * y)
                return tape.gradient(loss, [x, layer.kernel])

            outputs.append(forward(x).numpy())
            f_ms = median_ms(forward, (x,), args.warmup, args.repeats)
            g_ms = median_ms(gradient, (x,), args.warmup, args.repeats)
            cells.append((f_ms, g_ms))
        (kf, kg), (af, ag) = cells
        gflop = useful_gflop(batch, height, width, cin, args.filters, rate)
        diff = float(np.max(np.abs(outputs[0] - outputs[1])))
        rows.append(f"| {rate} | {gflop:.1f} | {kf:.0f} | {af:.0f} | {kf / af:.1f}x | {kg:.0f} | {ag:.0f} | "
                    f"{kg / ag:.1f}x | "
                    f"{gflop / af * 1e3:.0f} ({gflop / af * 1e3 / peak:.0%}) | "
                    f"{3 * gflop / ag * 1e3:.0f} ({3 * gflop / ag * 1e3 / peak:.0%}) | {diff:.1e} |")
        print(rows[-1], file=sys.stderr)

    print(f"- machine: {machine()}")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    python = os.path.relpath(sys.executable)
    python = sys.executable if python.startswith("..") else python
    print(f"- command: `{' '.join(shlex.quote(a) for a in [python, *sys.argv])}`")
    print(f"- input {tuple(args.shape)}, kernel 3x3x{cin}x{args.filters}, 'same' padding, fp32, graph mode; "
          f"fp32 matmul peak measured {peak:.0f} GFLOP/s; native dilated path "
          f"{'on' if native_dilated_conv_available() else 'OFF (AtrousConv2D = Conv2D)'}; median of "
          f"{args.repeats} after {args.warmup} warm-up runs\n")
    print("| rate | useful GFLOP fwd | Conv2D fwd (ms) | AtrousConv2D fwd (ms) | speed-up | Conv2D fwd+grad (ms) | "
          "AtrousConv2D fwd+grad (ms) | speed-up | AtrousConv2D fwd GFLOP/s (of peak) | "
          "AtrousConv2D fwd+grad GFLOP/s (of peak) | max abs output diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
