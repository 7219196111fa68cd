"""Render the README's picture: phantom frames (top) and the same frames with their ground-truth contours (bottom).

    python tools/render_phantom_figure.py --out docs/phantom_frames.png [--preset default] [--seed 0]

Frames are picked to show what the phantom holds: calcium of small and large arc with its acoustic shadow
(and reverberations), a side branch, and dense fibrous plaque (bright, no shadow) as a calcium look-alike.
"""

from __future__ import annotations

import argparse

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from tfrecords_builder.phantom import PRESETS, acoustics, anatomy  # noqa: E402

COLOURS = {"calcium": "#ff3030", "lumen": "#ffd21f", "vessel": "#22d3ee"}


def candidates(config, seed: int, cases: int, frames: int):
    x_mm, y_mm = acoustics.pixel_grid_mm(config.image_size, config.pixel_spacing_mm)
    for k in range(cases):
        case = anatomy.sample_case(config, np.random.default_rng([seed, k]), frames)
        for i in range(frames):
            rng = np.random.default_rng([seed, k, i])
            anat = anatomy.frame_anatomy(case, case.length_mm * i / max(frames - 1, 1), rng)
            calcium_arc = 0.0
            if anatomy.CALCIUM in anat.deposits:
                calcium_arc = 360.0 * np.mean(anat.deposits[anatomy.CALCIUM][1] > 0.02)
            yield {
                "case": k, "frame": i, "anat": anat, "acoustics": case.acoustics, "rng": rng,
                "calcium_arc": calcium_arc,
                "branch": any(b.kind == anatomy.BLOOD for b in anat.blobs),
                "fibrous": anatomy.FIBROUS in anat.deposits and np.any(anat.deposits[anatomy.FIBROUS][1] > 0.1),
                "masks": lambda a=anat: anatomy.masks(a, x_mm, y_mm),
            }


def pick(config, seed: int):
    wanted = [
        ("calcium, small arc", lambda c: 20 < c["calcium_arc"] < 100),
        ("calcium, large arc", lambda c: 150 < c["calcium_arc"] < 300),
        ("side branch", lambda c: c["branch"]),
        ("fibrous plaque, no calcium", lambda c: c["fibrous"] and c["calcium_arc"] == 0),
    ]
    chosen, used_cases = [], set()
    pool = list(candidates(config, seed, cases=24, frames=6))
    for title, test in wanted:
        match = next((c for c in pool if test(c) and c["case"] not in used_cases), None)
        match = match or next(c for c in pool if c["case"] not in used_cases)
        used_cases.add(match["case"])
        chosen.append((title, match))
    return chosen


def contours(mask):
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :] for c in found if len(c) > 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/phantom_frames.png")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = PRESETS[args.preset]
    chosen = pick(config, args.seed)
    fig, axes = plt.subplots(2, len(chosen), figsize=(3.2 * len(chosen), 6.7), facecolor="black")
    for col, (title, c) in enumerate(chosen):
        image = acoustics.render_frame(c["anat"], c["acoustics"], config.image_size, config.pixel_spacing_mm,
                                       config.a_lines, c["rng"])
        calcium, wall_lumen = c["masks"]()
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_axis_off()
        ax = axes[1, col]
        for name, mask in (("lumen", wall_lumen == 1), ("vessel", wall_lumen >= 1), ("calcium", calcium)):
            for line in contours(mask):
                ax.plot(line[:, 0], line[:, 1], color=COLOURS[name], lw=1.0)
        axes[0, col].set_title(f"{title}\ncase {c['case']}, frame {c['frame']}", color="white", fontsize=9)
    bar_mm = 2.0
    axes[0, 0].plot([20, 20 + bar_mm / config.pixel_spacing_mm], [config.image_size - 20] * 2, color="white", lw=2)
    axes[0, 0].text(20, config.image_size - 30, f"{bar_mm:g} mm", color="white", fontsize=8)
    handles = [Line2D([], [], color=COLOURS[n], lw=2, label=label) for n, label in
               (("calcium", "calcium"), ("lumen", "lumen"), ("vessel", "vessel (EEM)"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white", fontsize=9)
    fig.suptitle(f"ivus-tf phantom ('{args.preset}' preset, seed {args.seed}): frames and ground truth",
                 color="white", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(args.out, dpi=110, facecolor="black")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
