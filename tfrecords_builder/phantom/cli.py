"""`python -m tfrecords_builder phantom`: generate a phantom IVUS dataset in the manifest layout."""

from __future__ import annotations

import argparse
import dataclasses

from ivus_tf.core.config import load_yaml
from ivus_tf.core.errors import pixel_spacing_arg, positive_int_arg
from tfrecords_builder.phantom.config import PRESETS, bounds
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
    parser.add_argument("--preset", choices=sorted(PRESETS), default="randomized",
                        help="knob preset (default randomized: scanners vary per case; default: one scanner; "
                             "benchmark: frozen, harder; shifted: held-out scanner look, never trained on)")
    parser.add_argument("--config", help="YAML file overriding preset knobs (keys of PhantomConfig)")
    parser.add_argument("--image-size", type=int, help="fix the frame size in pixels (default: the preset's range)")
    parser.add_argument("--pixel-spacing-mm", type=pixel_spacing_arg,
                        help="fix the pixel spacing in mm (default: the preset's range)")
    parser.add_argument("--workers", type=positive_int_arg, default=1,
                        help="worker processes (output is identical)")
    parser.add_argument("--overwrite", action="store_true")


def fix_geometry(config, image_size: int | None, pixel_spacing_mm: float | None):
    """`config` with the frame size and/or pixel spacing fixed; the field of view follows from them."""
    if image_size is None and pixel_spacing_mm is None:
        return config
    size = bounds(config.image_size) if image_size is None else (image_size, image_size)
    spacing = bounds(config.pixel_spacing_mm) if pixel_spacing_mm is None else (pixel_spacing_mm, pixel_spacing_mm)
    return dataclasses.replace(config, image_size=size, pixel_spacing_mm=spacing,
                               field_of_view_mm=(size[0] * spacing[0], size[1] * spacing[1]))


def run(args: argparse.Namespace) -> int:
    config = PRESETS[args.preset]
    if args.config:
        config = load_yaml(type(config), args.config, base=config)
    config = fix_geometry(config, args.image_size, args.pixel_spacing_mm)
    info = generate_dataset(args.out, cases=args.cases, frames_per_case=args.frames_per_case, seed=args.seed,
                            task=args.task, preset=args.preset, config=config, disjoint_tasks=args.disjoint_tasks,
                            workers=args.workers, overwrite=args.overwrite)
    frames = args.cases * args.frames_per_case
    with_calcium = sum(c["frames_with_calcium"] for c in info["cases"].values())
    sizes = sorted({c["render"]["scanner"]["image_size"] for c in info["cases"].values()})
    spacings = sorted({c["render"]["scanner"]["pixel_spacing_mm"] for c in info["cases"].values()})
    print(f"phantom: {args.cases} cases, {frames} frames ({with_calcium} with calcium), frames {sizes[0]}-{sizes[-1]} "
          f"px at {spacings[0]:.4f}-{spacings[-1]:.4f} mm (preset {args.preset}) -> {args.out}/manifest.csv")
    return 0
