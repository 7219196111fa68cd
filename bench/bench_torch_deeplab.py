"""PyTorch reference for the DeepLabV3 train-step benchmark: the network of `ivus_tf.models.deeplabv3` in torch.nn.

Runs in its own environment with PyTorch 2.13 (CPU) and numpy only, no TensorFlow and no torchvision:

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python bench/bench_torch_deeplab.py [--rates 6 12 18] [--rates 12 24 36] [--json]

The network is written by hand to match the Keras one layer for layer: keras.applications' ResNet50 (biased
convolutions, stride on the first 1x1 of a stage, batch norm epsilon 1.001e-5) with conv4/conv5 dilated as
torchvision's `replace_stride_with_dilation` does (output stride 8), 1 input channel, torchvision's DeepLabHead
(ASPP with image pooling, dropout 0.5, 3x3 conv), a 1x1 classifier to 2 classes (the one-task calcium model),
bilinear x8 upsampling and softmax. One train step = forward, categorical cross-entropy, backward, Adam(2e-4)
update, at batch 2, 256x256, fp32. Median of --steps steps after --warmup steps, on --threads threads
(`bench/bench_deeplab_train_step.py` calls this script and puts both frameworks in one table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)

BN_EPSILON = 1.001e-5
STAGES = ((64, 3, 1, 1, 1), (128, 4, 2, 1, 1), (256, 6, 1, 2, 1), (512, 3, 1, 4, 2))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, filters: int, stride: int, dilation: int, conv_shortcut: bool):
        super().__init__()
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, 4 * filters, 1, stride), nn.BatchNorm2d(4 * filters, BN_EPSILON))
                         if conv_shortcut else nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(cin, filters, 1, stride), nn.BatchNorm2d(filters, BN_EPSILON), nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(filters, BN_EPSILON),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, 4 * filters, 1), nn.BatchNorm2d(4 * filters, BN_EPSILON))

    def forward(self, x):
        return F.relu(self.shortcut(x) + self.body(x))


def conv_bn_relu(cin: int, cout: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPPPooling(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv_bn_relu(cin, cout, 1)

    def forward(self, x):
        pooled = self.conv(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3(nn.Module):
    def __init__(self, rates, num_classes: int = 2, channels: int = 256, dropout: float = 0.5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 64, 7, 2, padding=3), nn.BatchNorm2d(64, BN_EPSILON), nn.ReLU(True),
                                  nn.MaxPool2d(3, 2, padding=1))
        blocks, cin = [], 64
        for filters, count, stride, dilation, first_dilation in STAGES:
            blocks.append(Bottleneck(cin, filters, stride, first_dilation, conv_shortcut=True))
            blocks += [Bottleneck(4 * filters, filters, 1, dilation, False) for _ in range(count - 1)]
            cin = 4 * filters
        self.backbone = nn.Sequential(*blocks)
        self.aspp = nn.ModuleList([conv_bn_relu(cin, channels, 1)] +
                                  [conv_bn_relu(cin, channels, 3, rate) for rate in rates] +
                                  [ASPPPooling(cin, channels)])
        self.head = nn.Sequential(conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout(dropout),
                                  conv_bn_relu(channels, channels, 3), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x):
        features = self.backbone(self.stem(x))
        x = self.head(torch.cat([branch(features) for branch in self.aspp], dim=1))
        return F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False).softmax(dim=1)


def lscpu_model() -> str:
    return benchlib.cpu_model()


def time_train_step(rates, batch: int, size: int, steps: int, warmup: int, channels_last: bool) -> dict:
    torch.manual_seed(0)
    model = DeepLabV3(rates).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    images = torch.rand(batch, 1, size, size)
    labels = torch.randint(0, 2, (batch, size, size))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def step():
        optimizer.zero_grad(set_to_none=True)
        probabilities = model(images)
        loss = F.nll_loss(torch.log(probabilities.clamp_min(1e-7)), labels)
        loss.backward()
        optimizer.step()
        return float(loss)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"framework": f"PyTorch {torch.__version__}" + (" channels_last" if channels_last else ""),
            "rates": list(rates), "median_s": float(np.median(times)), "min_s": float(np.min(times)),
            "max_s": float(np.max(times)), "parameters": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", action="append", help="ASPP rates (repeat for several sets)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true", help="also time torch.channels_last")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for rates in args.rates or [[6, 12, 18], [12, 24, 36]]:
        for channels_last in (False, True) if args.channels_last else (False,):
            results.append(time_train_step(rates, args.batch_size, args.image_size, args.steps, args.warmup,
                                           channels_last))
            print(json.dumps(results[-1]) if args.json else results[-1], file=sys.stdout if args.json else sys.stderr,
                  flush=True)
    if args.json:
        return 0
    print(f"- machine: {lscpu_model()}, torch threads {torch.get_num_threads()}, PyTorch {torch.__version__}, "
          f"Python {platform.python_version()}")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- command: `{' '.join([sys.executable, *sys.argv])}`")
    print(f"- train step at batch {args.batch_size}, {args.image_size}x{args.image_size}, fp32; median (min-max) of "
          f"{args.steps} steps after {args.warmup}\n")
    print("| framework | ASPP rates | parameters | train step (s) |")
    print("|---|---|---:|---:|")
    for r in results:
        print(f"| {r['framework']} | {'/'.join(map(str, r['rates']))} | {r['parameters']:,} | "
              f"{r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
