"""The calcium rule baseline on the phantom of a grid config: fit time, test scores, intensity modes, a figure.

    python bench/bench_rule.py [--config configs/phantom_table1_small.yaml] [--repeat 0] [--fold 0]
                               [--png rule_examples.png] [--frames 8]

Fits the rule (`ivus_tf.baselines`) on the calcium frames of the fold's TRAINING cases, and on all non-test cases
(training + validation folds), and scores it on the test cases exactly as a training run scores its model
(`ivus_tf.evaluation.rule_baseline`); then compares the two intensity modes (fitted on the training cases, scored on
the test cases as they are and with every test frame's grey levels scaled by 0.8 and 1.25, a gain change the
training frames did not show). Prints markdown for BENCHMARKS.md; with --png, draws test frames with the rule's
contour (orange) over the ground truth (green).
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)


def records_of(config_path: str, repeat: int, fold: int):
    from ivus_tf.grid.config import expand_grid, load_grid_config
    from ivus_tf.splits import fold_cases, read_splits
    from ivus_tf.training.run import plan_run

    grid, base = load_grid_config(config_path)
    run = next(r for r in expand_grid(grid, base, "/tmp/bench-rule-unused") if (r.repeat, r.fold) == (repeat, fold))
    plan = plan_run(run.config, log=lambda text: None)
    train, val, test = fold_cases(read_splits(plan.splits_path), repeat, fold, "calcium")
    return plan.records_dir, train, val, test


def frames_of(records_dir, cases):
    from ivus_tf.data.records import iterate_frames

    found = [f for f in iterate_frames(records_dir, cases) if f["calcium_mask"] is not None]
    return [f["image"] for f in found], [f["calcium_mask"] for f in found], [f["pixel_spacing_mm"] for f in found]


def draw(records_dir, test, params, path, count=8):
    import cv2

    from ivus_tf.baselines import predict_calcium
    from ivus_tf.data.records import iterate_frames
    from ivus_tf.metrics import dice

    found = [f for f in iterate_frames(records_dir, test) if f["calcium_mask"] is not None]
    picks = np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)
    tiles = []
    for frame in (found[i] for i in picks):
        mask = predict_calcium(frame["image"], frame["pixel_spacing_mm"], params)
        tile = cv2.cvtColor(frame["image"], cv2.COLOR_GRAY2BGR)
        for m, colour in ((frame["calcium_mask"] > 0, (80, 200, 60)), (mask, (0, 140, 255))):
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(tile, contours, -1, colour, 1)
        text = f"{frame['case_id']}/{frame['frame_id']} Dice {dice(mask, frame['calcium_mask']):.2f}"
        cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    cv2.imwrite(path, np.concatenate([np.concatenate(tiles[i:i + 4], 1) for i in range(0, len(tiles), 4)], 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/phantom_table1_small.yaml")
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--png", help="draw test frames with the rule's contour into this PNG")
    parser.add_argument("--frames", type=int, default=8, help="test frames in the PNG (default 8)")
    args = parser.parse_args()

    from ivus_tf.baselines import RuleParams, fit_rule, score_rule
    from ivus_tf.evaluation import predict_nothing_baseline, rule_baseline

    records_dir, train, val, test = records_of(args.config, args.repeat, args.fold)
    print(f"- machine: {benchlib.machine()}\n- date: {datetime.date.today()}\n- command: python bench/bench_rule.py "
          f"--config {args.config} --repeat {args.repeat} --fold {args.fold}\n")
    print("| fitted on | frames | fit + score: wall / CPU | training Dice | test Dice | test average Hausdorff (mm) "
          "| rule |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    results = {}
    for label, cases in ((f"{len(train)} training cases (repeat {args.repeat} fold {args.fold})", train),
                         (f"{len(train) + len(val)} training + validation cases", sorted(train + val))):
        started, cpu = time.perf_counter(), time.process_time()
        rule = rule_baseline(records_dir, cases, test)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        results[label] = rule
        summary = rule["summary"]
        print(f"| {label} | {rule['fitted_on']['frames']} | {seconds:.0f} s / {cpu:.0f} s | "
              f"{rule['fitted_on']['mean_dice']:.3f} | "
              f"{summary['dice']['mean']:.3f} | {summary['average_hausdorff_mm']['mean']:.2f} | "
              f"{RuleParams.from_dict(rule['params'])} |")
    nothing = predict_nothing_baseline(records_dir, test)
    print(f"| predict nothing | - | - | - | {nothing['dice']['mean']:.3f} | "
          f"{nothing['average_hausdorff_mm']['mean']:.2f} | |")
    counts = next(iter(results.values()))["summary"]["empty_cases"]
    print(f"\nTest frames by empty-mask case (rule fitted on the training cases): {counts}\n")

    print("| intensity | test Dice | test Dice, gain x0.8 | test Dice, gain x1.25 | fitted |")
    print("| --- | ---: | ---: | ---: | --- |")
    train_frames, test_frames = frames_of(records_dir, train), frames_of(records_dir, test)
    for mode in ("normalised", "raw"):
        params = fit_rule(*train_frames, intensities=(mode,))
        scores = []
        for gain in (1.0, 0.8, 1.25):
            images = [np.clip(np.asarray(i, np.float32) * gain, 0, 255).astype(np.uint8) for i in test_frames[0]]
            scores.append(score_rule(images, *test_frames[1:], params).mean())
        print(f"| {mode} | {scores[0]:.3f} | {scores[1]:.3f} | {scores[2]:.3f} | {params} |")
    issue = RuleParams(intensity="raw", smoothing_sigma_mm=0.06, bright_threshold=120.0, shadow_threshold=35.0,
                       shadow_near_mm=0.3, shadow_far_mm=1.6, min_radius_mm=0.0)
    print(f"\nThe issue's two thresholds alone (raw > 120, mean 0.3-1.6 mm behind < 35, sigma 0.06 mm, no piece "
          f"filter): test Dice {score_rule(*test_frames, issue).mean():.3f}")
    if args.png:
        first = next(iter(results.values()))
        draw(records_dir, test, RuleParams.from_dict(first["params"]), args.png, args.frames)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
