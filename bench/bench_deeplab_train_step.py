"""Train-step time of the one-task DeepLabV3-R50-OS8 calcium model: Keras (TensorFlow backend) vs PyTorch.

The Keras model is `build_model("deeplabv3", tasks=("calcium",))` at width 1.0 (39.7 M parameters), compiled with
Adam(2e-4) and categorical cross-entropy, graph mode, fp32, jit_compile off; one step = `train_on_batch` at batch
2, 256x256. Variants: "AtrousConv2D" (the model as shipped: dilated convolutions run `tf.nn.conv2d(...,
dilations=r)`) and "keras Conv2D" (the same model with AtrousConv2D's fast path switched off, i.e. what plain
`keras.layers.Conv2D(dilation_rate=r)` does: SpaceToBatchND lowering). The PyTorch reference is
bench/bench_torch_deeplab.py (the same network in torch.nn), run with --torch-python in its own environment;
Keras and PyTorch runs alternate per rate set, so both see the same load on a shared machine.

Median (min-max) of --steps steps after --warmup steps (the first includes tracing). Prints a markdown table with
machine, date and command. Usage:

    .venv/bin/python bench/bench_deeplab_train_step.py [--rates 6 12 18] [--rates 12 24 36]
        [--torch-python /tmp/torchvenv/bin/python] [--variants atrous conv2d] [--steps 5] [--warmup 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivus_tf.core.tf_import import import_tensorflow  # noqa: E402

tf = import_tensorflow()

import keras  # noqa: E402

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)
from ivus_tf.models import build_model, layers  # noqa: E402

VARIANTS = {"atrous": "Keras, AtrousConv2D", "conv2d": "Keras, keras Conv2D"}


def machine() -> str:
    return (f"{benchlib.cpu_model()}, {benchlib.usable_cores()} cores usable, TensorFlow {tf.__version__}, Keras "
            f"{keras.__version__}, Python {platform.python_version()}, "
            f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}")


def time_keras(rates, variant: str, batch: int, size: int, steps: int, warmup: int) -> dict:
    native = layers.native_dilated_conv_available
    if variant == "conv2d":
        layers.native_dilated_conv_available = lambda: False  # AtrousConv2D -> plain keras Conv2D
    try:
        keras.utils.set_random_seed(0)
        model = build_model("deeplabv3", tasks=("calcium",), input_shape=(size, size, 1), aspp_rates=rates)
        model.compile(optimizer=keras.optimizers.Adam(2e-4), loss="categorical_crossentropy", jit_compile=False)
        rng = np.random.default_rng(0)
        x = tf.constant(rng.random((batch, size, size, 1), dtype=np.float32))
        y = {"calcium": tf.constant(np.eye(2, dtype=np.float32)[rng.integers(0, 2, (batch, size, size))])}
        start = time.perf_counter()
        for _ in range(warmup):
            model.train_on_batch(x, y)
        first = time.perf_counter() - start
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    finally:
        layers.native_dilated_conv_available = native
    return {"framework": VARIANTS[variant], "rates": list(rates), "median_s": float(np.median(times)),
            "min_s": float(np.min(times)), "max_s": float(np.max(times)),
            "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)), "warmup_s": first}


def time_torch(python: str, rates, args) -> list[dict]:
    command = [python, str(ROOT / "bench" / "bench_torch_deeplab.py"), "--json", "--rates", *map(str, rates),
               "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--steps",
               str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    if args.torch_channels_last:
        command.append("--channels-last")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", action="append", help="ASPP rates (repeat for several sets)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["atrous"])
    parser.add_argument("--torch-python", help="python of an environment with torch 2.13 (no torch run without)")
    parser.add_argument("--torch-channels-last", action="store_true", help="also time PyTorch with channels_last")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    results = []
    for rates in args.rates or [[6, 12, 18], [12, 24, 36]]:
        for variant in args.variants:
            results.append(time_keras(rates, variant, args.batch_size, args.image_size, args.steps, args.warmup))
            print(results[-1], file=sys.stderr, flush=True)
        if args.torch_python:
            for result in time_torch(args.torch_python, rates, args):
                results.append(result)
                print(result, file=sys.stderr, flush=True)

    print(f"- machine: {machine()}")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    python = os.path.relpath(sys.executable)
    python = sys.executable if python.startswith("..") else python
    print(f"- command: `{' '.join(shlex.quote(a) for a in [python, *sys.argv])}`")
    print(f"- one-task DeepLabV3-R50-OS8, batch {args.batch_size}, {args.image_size}x{args.image_size}, fp32, Adam; "
          f"median (min-max) of {args.steps} train steps after {args.warmup} warm-up steps; PyTorch on "
          f"{args.threads} threads; load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| framework | ASPP rates | trainable parameters | train step (s) |")
    print("|---|---|---:|---:|")
    for r in results:
        print(f"| {r['framework']} | {'/'.join(map(str, r['rates']))} | {r['parameters']:,} | "
              f"{r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
