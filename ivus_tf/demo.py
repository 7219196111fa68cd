"""`python -m ivus_tf.demo --out runs/demo`: the data half of the main job, on the embedded phantom.

    phantom pullbacks (manifest layout) -> TFRecords keyed by case -> case-wise splits (test set + 10 x 3-fold CV)
    -> one epoch of the multi-task training pipeline (decode, resize, flips + rotations, mixed batches)

and a summary of what the pipeline feeds a model, plus `train_batch.png`, a picture of the first augmented batch
with its labels. A stage whose output already exists is reused (delete the folder to start over). The training
command (`python -m ivus_tf.train`) builds on exactly these pieces.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ivus_tf.core.errors import ArgumentParser, run_cli


def draw_batch(images: np.ndarray, targets: dict, weights: dict, path: Path, columns: int = 6) -> None:
    """Save a grid of augmented frames with their labels: calcium red, lumen yellow, vessel cyan."""
    tiles = []
    for i in range(images.shape[0]):
        tile = cv2.cvtColor(np.round(images[i, ..., 0] * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        masks = []
        if "wall_lumen" in targets and weights["wall_lumen"][i].item() > 0:
            masks += [(targets["wall_lumen"][i] >= 1, (255, 255, 0)), (targets["wall_lumen"][i] == 1, (0, 215, 255))]
        if "calcium" in targets and weights["calcium"][i].item() > 0:
            masks.append((targets["calcium"][i] == 1, (40, 40, 255)))
        for mask, colour in masks:
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(tile, contours, -1, colour, 1)
        label = "+".join(t.replace("wall_lumen", "wall") for t in targets if weights[t][i].item() > 0)
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)]
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))


def run_demo(out: str | os.PathLike, cases: int = 9, frames_per_case: int = 12, seed: int = 0,
             image_size: int = 256, batch_size: int = 12) -> dict:
    """Run the data half of the main job into `out`; return the summary numbers."""
    from ivus_tf.splits import case_tasks_from_index, fold_cases, load_or_create_splits
    from tfrecords_builder.build import build_records
    from tfrecords_builder.index import read_index
    from tfrecords_builder.phantom import generate_dataset

    out = Path(out)
    phantom_dir, records_dir = out / "phantom", out / "records"
    if not (phantom_dir / "manifest.csv").is_file():
        print(f"[1/4] phantom: {cases} pullbacks x {frames_per_case} frames, calcium and wall-lumen labels on "
              f"alternate frames (as in the paper)", flush=True)
        generate_dataset(phantom_dir, cases=cases, frames_per_case=frames_per_case, seed=seed,
                         disjoint_tasks=True, workers=min(os.cpu_count() or 1, cases))
    else:
        print(f"[1/4] phantom: reusing {phantom_dir}", flush=True)
    if not (records_dir / "index.json").is_file():
        print("[2/4] TFRecords keyed by case", flush=True)
        build_records(phantom_dir / "manifest.csv", records_dir)
    else:
        print(f"[2/4] TFRecords: reusing {records_dir}", flush=True)
    index = read_index(records_dir)
    splits = load_or_create_splits(out / "splits.json", case_tasks_from_index(index), seed=seed)
    train, val, test = fold_cases(splits, repeat=0, fold=0)
    print(f"[3/4] splits: {len(test)} test cases, 10 repeats x 3 folds over the rest; repeat 0 fold 0 trains on "
          f"{len(train)} cases, validates on {len(val)}", flush=True)

    from ivus_tf.data import PipelineConfig, make_train_dataset

    config = PipelineConfig(image_size=image_size, batch_size=batch_size, seed=seed)
    frames = sum(index["cases"][c]["frames"] for c in train)
    steps = math.ceil(frames / batch_size)
    print(f"[4/4] one epoch of the training pipeline: {frames} frames -> {steps} batches of {batch_size}", flush=True)
    dataset = make_train_dataset(records_dir, train, config)
    counts = {task: 0.0 for task in config.tasks}
    calcium_pixels = labelled_pixels = 0.0
    start = time.perf_counter()
    for step, (images, targets, weights) in enumerate(dataset.take(steps).as_numpy_iterator()):
        if step == 0:
            draw_batch(images, targets, weights, out / "train_batch.png")
        for task in config.tasks:
            counts[task] += float(weights[task].sum())
        calcium_weight = weights["calcium"]
        calcium_pixels += float((targets["calcium"].sum(axis=(1, 2)) * calcium_weight).sum())
        labelled_pixels += float(calcium_weight.sum()) * image_size * image_size
    elapsed = time.perf_counter() - start
    summary = {
        "batches": steps, "frames_per_second": steps * batch_size / elapsed, "image_shape": list(images.shape),
        "calcium_frames": counts["calcium"], "wall_lumen_frames": counts["wall_lumen"],
        "calcium_pixel_fraction": calcium_pixels / max(labelled_pixels, 1),
    }
    print(f"      batches: image {tuple(images.shape)} float32 in [0, 1]; targets calcium {targets['calcium'].shape}, "
          f"wall_lumen {targets['wall_lumen'].shape} int32")
    print(f"      per batch: {config.calcium_frames_per_batch()} calcium frames + "
          f"{batch_size - config.calcium_frames_per_batch()} wall-lumen frames (per-task sample weights 0/1)")
    print(f"      calcium covers {100 * summary['calcium_pixel_fraction']:.2f}% of calcium-labelled pixels "
          f"(why the generalized Dice loss weights classes)")
    print(f"      {summary['frames_per_second']:.0f} frames/s including PNG decoding; picture: {out / 'train_batch.png'}")
    return summary


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="python -m ivus_tf.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--cases", type=int, default=9)
    parser.add_argument("--frames-per-case", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=12)
    args = parser.parse_args(argv)
    run_demo(args.out, args.cases, args.frames_per_case, args.seed, args.image_size, args.batch_size)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
