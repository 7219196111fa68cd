"""Render docs/augmentation.png: each appearance transform at the ends of its default range on one phantom frame,
and docs/augmentation_batch.png: a training batch with the default appearance augmentation and its label contours.

    python tools/render_augmentation_figure.py --out docs/augmentation.png --batch-out docs/augmentation_batch.png

The frames come from the quickstart's phantom (preset `randomized`: every pullback imaged by its own scanner),
resized to 256x256 as the pipeline resizes them. The batch uses `augment_batch` exactly as the pipeline does
(flips, rotations, zoom in one warp; appearance on the image only); contours (`ivus_tf.overlay`): calcium red,
lumen yellow, vessel cyan.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ivus_tf.augment_config import AugmentConfig  # noqa: E402
from ivus_tf.data import appearance as A  # noqa: E402
from ivus_tf.data.augment import augment_batch, transform_batch  # noqa: E402
from ivus_tf.overlay import render_overlay  # noqa: E402
from tfrecords_builder.phantom import PRESETS, render_case_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def phantom_frames(count: int, seed: int, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [N,S,S] in [0,1], calcium [N,S,S], wall_lumen [N,S,S]): the middle frame of `count` pullbacks of the
    `randomized` preset, resized like the pipeline (image bilinear, masks nearest)."""
    images, calcium, wall_lumen = [], [], []
    for case in range(count):
        _, _, image, calcium_mask, wall_lumen_mask = list(render_case_frames(PRESETS["randomized"], seed, case, 3))[1]
        images.append(cv2.resize(image.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_LINEAR))
        for masks, mask in ((calcium, calcium_mask), (wall_lumen, wall_lumen_mask)):
            masks.append(cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST))
    return np.stack(images), np.stack(calcium), np.stack(wall_lumen)


def one_at_a_time(image: np.ndarray, config: AugmentConfig) -> list[tuple[str, np.ndarray]]:
    """(title, image) for the original and each transform at both ends of its range (one frame, fixed seeds)."""
    x = image[None, ..., None]
    seed = np.array([0, 1], np.int64)

    def zoom(z):
        return transform_batch(x, x.astype(np.uint8), [0.0], [False], [False], [z])[0]

    c = config
    panels = [("original", x),
              *[(f"zoom {z:g}", zoom(z)) for z in c.aug_zoom_range],
              (f"speckle {c.aug_speckle_strength_range[1]:g}",
               A.multiply_speckle(x, [c.aug_speckle_strength_range[1]], seed)),
              (f"noise std {c.aug_noise_std_range[1]:g}", A.add_gaussian_noise(x, [c.aug_noise_std_range[1]], seed)),
              (f"blur sigma {c.aug_blur_sigma_px_range[1]:g} px",
               A.gaussian_blur(x, [c.aug_blur_sigma_px_range[1]], 3)),
              *[(f"brightness x{f:g}", A.adjust_brightness(x, [f], [0.0])) for f in c.aug_brightness_range],
              *[(f"offset {o:+g}", A.adjust_brightness(x, [1.0], [o])) for o in c.aug_brightness_offset_range],
              *[(f"contrast x{f:g}", A.adjust_contrast(x, [f])) for f in c.aug_contrast_range],
              (f"low resolution x{c.aug_low_resolution_scale_range[0]:g}",
               A.simulate_low_resolution(x, [c.aug_low_resolution_scale_range[0]])),
              *[(f"gamma {g:g}", A.adjust_gamma(x, [g])) for g in c.aug_gamma_range],
              (f"inverted gamma {c.aug_gamma_range[1]:g}", A.adjust_gamma(x, [c.aug_gamma_range[1]], invert=True))]
    return [(title, np.clip(np.asarray(out)[0, ..., 0], 0, 1)) for title, out in panels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "augmentation.png"))
    parser.add_argument("--batch-out", default=str(ROOT / "docs" / "augmentation_batch.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8, help="frames in the batch picture (pullbacks rendered)")
    args = parser.parse_args()

    images, calcium, wall_lumen = phantom_frames(args.frames, args.seed)
    config = AugmentConfig(appearance_augmentation=True)
    panels = one_at_a_time(images[0], config)
    columns = 6
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.35 * rows))
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (title, panel) in zip(axes.ravel(), panels):
        axis.imshow(panel, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")

    # Every frame gets every transform's chance; probabilities raised so that one batch shows them all.
    strong = dataclasses.replace(config, **{f.name: min(1.0, 2.5 * getattr(config, f.name))
                                            for f in dataclasses.fields(config) if f.name.endswith("_probability")})
    labels = (calcium + 2 * wall_lumen)[..., None].astype(np.uint8)
    out, codes = augment_batch(images[..., None], labels, np.array([args.seed, 0], np.int64), augment=strong)
    codes, out = np.asarray(codes)[..., 0], np.asarray(out)[..., 0]
    tiles = [render_overlay(out[i], {"calcium": codes[i] & 1, "wall_lumen": codes[i] >> 1}) for i in range(len(out))]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 4)
    grid = np.concatenate([np.concatenate(tiles[r:r + 4], axis=1) for r in range(0, len(tiles), 4)], axis=0)
    cv2.imwrite(args.batch_out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.batch_out}")


if __name__ == "__main__":
    main()
