"""`python -m tfrecords_builder phantom`: generate a phantom IVUS dataset in the manifest layout."""

from __future__ import annotations

import argparse
import dataclasses

from ivus_tf.core.config import load_yaml
from tfrecords_builder.phantom.config import PRESETS
from tfrecords_builder.phantom.generate import TASK_CHOICES, generate_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--cases", type=int, default=12, help="number of pullbacks (default 12)")
    parser.add_argument("--frames-per-case", type=int, default=20, help="frames per pullback (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=TASK_CHOICES, default="both",
                        help="which labels to write (default both)")
    parser.add_argument("--disjoint-tasks", action="store_true",
                        help="with --task both: each frame carries only one label, alternating, as in the paper")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="knob preset; 'benchmark' is frozen for accuracy numbers")
    parser.add_argument("--config", help="YAML file overriding preset knobs (keys of PhantomConfig)")
    parser.add_argument("--image-size", type=int, help="frame size in pixels (default 500)")
    parser.add_argument("--pixel-spacing-mm", type=float, help="pixel spacing (default 0.02 mm)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (output is identical)")
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    config = PRESETS[args.preset]
    if args.config:
        config = load_yaml(type(config), args.config, base=config)
    overrides = {k: v for k, v in (("image_size", args.image_size), ("pixel_spacing_mm", args.pixel_spacing_mm))
                 if v is not None}
    config = dataclasses.replace(config, **overrides)
    info = generate_dataset(args.out, cases=args.cases, frames_per_case=args.frames_per_case, seed=args.seed,
                            task=args.task, preset=args.preset, config=config, disjoint_tasks=args.disjoint_tasks,
                            workers=args.workers, overwrite=args.overwrite)
    frames = args.cases * args.frames_per_case
    with_calcium = sum(c["frames_with_calcium"] for c in info["cases"].values())
    print(f"phantom: {args.cases} cases, {frames} frames ({with_calcium} with calcium), "
          f"{config.image_size}x{config.image_size} px at {config.pixel_spacing_mm} mm -> {args.out}/manifest.csv")
    return 0
