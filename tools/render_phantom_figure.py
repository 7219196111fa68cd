"""Render the phantom's pictures: frames from several scanners with their ground truth, and the held-out look.

    python tools/render_phantom_figure.py --out docs/phantom_frames.png [--shifted-out docs/phantom_shifted.png]
        [--preset randomized] [--seed 0]

`--out`: eight frames of the domain-randomised phantom, each from a different case and so a different scanner,
picked to show what it holds (20 MHz phased array with its ring-down, 40-60 MHz rotational catheters with grey
blood speckle, calcium as a bright leading layer with its shadow, spotty calcium, stent struts, a side branch,
dense fibrous plaque), each above the same frame with its labels. `--shifted-out`: the same vessels imaged by the
training preset (top) and by the held-out `shifted` preset (bottom).
"""

from __future__ import annotations

import argparse

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ivus_tf.overlay import COLOURS_HEX as COLOURS  # noqa: E402  (the package's one colour table)
from tfrecords_builder.phantom import PRESETS, anatomy, labels, render_frame, sample_phantom_case  # noqa: E402

FRAMES = 6


def candidates(config, seed: int, cases: int):
    """Every frame of `cases` pullbacks, described by what it shows (anatomy only; rendering is lazy)."""
    for k in range(cases):
        pc = sample_phantom_case(config, seed, k, FRAMES)
        for i in range(FRAMES):
            anat = anatomy.frame_anatomy(pc.case, pc.z_mm(i), np.random.default_rng([seed, k, i]))
            calcium = anat.deposits.get(anatomy.CALCIUM)
            runs = 0 if calcium is None else int(np.sum(np.diff((calcium["thickness"] > 0.02).astype(int)) == 1))
            yield {
                "pc": pc, "frame": i, "scanner": pc.scanner, "calcium_arc": labels.calcium_arc_deg(anat),
                "calcium_pieces": runs, "plate": calcium is not None and calcium["thickness"].max() > 0.3,
                "stent": anat.struts is not None, "branch": any(b.kind == anatomy.BLOOD for b in anat.blobs),
                "fibrous": anatomy.FIBROUS in anat.deposits
                and bool(np.any(anat.deposits[anatomy.FIBROUS]["thickness"] > 0.1)),
            }


WANTED = [
    ("calcium, 20 MHz phased array", lambda c: c["scanner"].kind == "phased_array" and c["plate"]
     and 60 < c["calcium_arc"] < 200 and c["scanner"].catheter_look == "ringdown"),
    ("calcium, 40-50 MHz rotational", lambda c: 35 <= c["scanner"].frequency_mhz < 50 and c["plate"]
     and c["calcium_arc"] > 90),
    ("55-60 MHz: grey blood speckle", lambda c: c["scanner"].frequency_mhz >= 55),
    ("stent struts", lambda c: c["stent"]),
    ("spotty calcium", lambda c: c["calcium_pieces"] >= 2 and not c["plate"]),
    ("masked ring-down", lambda c: c["scanner"].catheter_look == "masked" and not c["scanner"].square_fov),
    ("side branch", lambda c: c["branch"]),
    ("fibrous plaque, no calcium; square crop", lambda c: c["fibrous"] and c["calcium_arc"] == 0
     and c["scanner"].square_fov),
]


def pick(config, seed: int):
    chosen, used = [], set()
    pool = list(candidates(config, seed, cases=60))
    for title, test in WANTED:
        match = next((c for c in pool if test(c) and c["pc"].index not in used), None)
        match = match or next(c for c in pool if c["pc"].index not in used)
        used.add(match["pc"].index)
        chosen.append((title, match["pc"], match["frame"]))
    return chosen


def contours(mask):
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :] for c in found if len(c) > 2]


def scanner_line(pc) -> str:
    s = pc.scanner
    kind = "rotational" if s.kind == "rotational" else "phased array"
    return f"{s.frequency_mhz:.0f} MHz {kind}, {s.image_size} px, {s.pixel_spacing_mm * 1000:.0f} um"


def draw_pair(ax_image, ax_labels, pc, frame: int, title: str) -> None:
    _, image, calcium, wall_lumen = render_frame(pc, frame)
    for ax in (a for a in (ax_image, ax_labels) if a is not None):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
    if ax_labels is not None:
        for name, mask in (("lumen", wall_lumen == 1), ("vessel", wall_lumen >= 1), ("calcium", calcium)):
            for line in contours(mask):
                ax_labels.plot(line[:, 0], line[:, 1], color=COLOURS[name], lw=0.8)
    bar = 2.0 / pc.scanner.pixel_spacing_mm  # a 2 mm bar: frames differ in pixel spacing
    size = pc.scanner.image_size
    ax_image.plot([0.05 * size, 0.05 * size + bar], [0.95 * size] * 2, color="white", lw=1.5)
    ax_image.set_title(f"{title}\ncase {pc.index}: {scanner_line(pc)}", color="white", fontsize=7.5)


def legend(fig) -> None:
    handles = [Line2D([], [], color=COLOURS[n], lw=2, label=label) for n, label in
               (("calcium", "calcium (leading layer)"), ("lumen", "lumen"), ("vessel", "vessel (EEM)"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white", fontsize=9)


def frames_figure(preset: str, seed: int, out: str) -> None:
    chosen = pick(PRESETS[preset], seed)
    cols = 4
    fig, axes = plt.subplots(4, cols, figsize=(3.1 * cols, 13.0), facecolor="black")
    for n, (title, pc, frame) in enumerate(chosen):
        block, col = divmod(n, cols)
        draw_pair(axes[2 * block, col], axes[2 * block + 1, col], pc, frame, title)
    legend(fig)
    fig.suptitle(f"ivus-tf phantom, preset '{preset}' (seed {seed}): each case its own scanner; frames and ground "
                 "truth; bars 2 mm", color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0.025, 1, 0.975))
    fig.savefig(out, dpi=110, facecolor="black")
    print(f"wrote {out}")


def shifted_figure(seed: int, out: str, cases=(1, 2, 4, 9)) -> None:
    fig, axes = plt.subplots(2, len(cases), figsize=(3.1 * len(cases), 6.9), facecolor="black")
    for col, k in enumerate(cases):
        for row, preset in enumerate(("randomized", "shifted")):
            pc = sample_phantom_case(PRESETS[preset], seed, k, FRAMES)
            draw_pair(axes[row, col], None, pc, 2, f"{preset}" + (" (held out)" if preset == "shifted" else ""))
    fig.suptitle("The same vessels: training look (top) and the held-out 'shifted' scanner (bottom); bars 2 mm",
                 color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(out, dpi=110, facecolor="black")
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/phantom_frames.png")
    parser.add_argument("--shifted-out", default="", help="also draw the held-out preset's figure here")
    parser.add_argument("--preset", default="randomized", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frames_figure(args.preset, args.seed, args.out)
    if args.shifted_out:
        shifted_figure(args.seed, args.shifted_out)


if __name__ == "__main__":
    main()
