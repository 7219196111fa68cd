"""Benchmark a whole pullback end to end (read, infer, measure, write, report) at full size, fp32 and reduced.

    python bench/bench_pullback.py [--frames 3000] [--archs unet_res deeplabv3] [--width 1.0]
        [--precisions fp32 bf16 int8] [--fp32-engines tensorflow onnxruntime] [--no-sequential] [--unique-frames 60]
        [--batch-size 12] [--io-threads 2] [--extrapolate-to N] [--dice-run RUN_DIR] [--work DIR]

1. A pullback of `--frames` 500x500 phantom frames (preset "default", 0.02 mm): `--unique-frames` rendered ones
   repeated in order (hard links), as a folder of PNGs, 30 frames/s at 0.5 mm/s.
2. Per architecture, a full-size model (width 1.0, 256x256 input; untrained: speed does not depend on the
   weights, but each head's logits are scaled to a decisive spread on phantom frames so that mask agreement
   means something) exported with model.onnx and, with int8, model_int8.onnx calibrated on phantom training
   frames of another seed (`ivus_tf.export.reduced`; no Dice check: the weights are random).
3. `python -m ivus_tf.predict --report` as a user runs it, one process per row: fp32 on TensorFlow and on ONNX
   Runtime, bf16 (TensorFlow, where the CPU has AVX512-BF16/AMX), int8 (ONNX Runtime), and fp32 ONNX Runtime with
   `--io-threads 0` (no overlap); `--fp32-engines` and `--no-sequential` leave rows out (a 3,000-frame row of a
   full-size model is 10-30 minutes on 2 cores). Wall time of the command, streaming frames/s (summary.json), CPU
   time, peak RSS; the speed-up of each reduced precision over fp32 on the same engine, measured in this run (over
   fp32 on the other engine, and saying so, when `--fp32-engines` left the same engine's fp32 row out).
4. Numerics on the full-size model: on the first 8 pullback frames, the largest |P - P_fp32| and the share of
   mask pixels equal to fp32 (random weights: a check of the arithmetic, not of accuracy).
5. With `--dice-run RUN_DIR` (a trained run, e.g. the quickstart's): `python -m ivus_tf.export RUN_DIR --format onnx
   --precision fp32,bf16,int8`, and the Dice change on that run's test cases that decides whether a precision is
   offered (`ivus_tf.export.precision_check`).
`--extrapolate-to N` adds the estimated time of N frames (start-up + N / streaming rate); only when asked.
Prints the CPU model and load (before and after) and markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SPEED_MM_S, RATE_HZ, SPACING_MM = 0.5, 30.0, 0.02
ROWS = (("fp32", "tensorflow", 2), ("bf16", "tensorflow", 2), ("fp32", "onnxruntime", 2), ("int8", "onnxruntime", 2),
        ("fp32", "onnxruntime", 0))


def cpu_line() -> str:
    from ivus_tf.export.precision import cpu_flags

    flags = cpu_flags()
    simd = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    load = os.getloadavg()
    return (f"{benchlib.machine()}; {', '.join(simd) or 'no AVX-512'}; load average {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} (1/5/15 min)")


def make_pullback(work: Path, frames: int, unique: int) -> Path:
    """`frames` PNGs in work/pullback: `unique` rendered phantom frames, repeated in order (hard links)."""
    import cv2

    from tfrecords_builder.phantom import PRESETS, render_case_frames

    rendered = work / "rendered"
    rendered.mkdir(parents=True, exist_ok=True)
    for i, _, image, _, _ in render_case_frames(PRESETS["default"], seed=7, case_index=0, frames=unique):
        cv2.imwrite(str(rendered / f"{i:05d}.png"), image)
    folder = work / "pullback"
    folder.mkdir()
    for i in range(frames):
        os.link(rendered / f"{i % unique:05d}.png", folder / f"{i:05d}.png")
    return folder


def calibration_run(work: Path):
    """Phantom records (preset default, not the pullback's seed) and splits: the int8 export's training frames."""
    from ivus_tf.export.reduced import run_data
    from ivus_tf.splits import case_tasks_from_index, make_splits, write_splits
    from ivus_tf.training.config import load_config
    from ivus_tf.training.phantom_cache import ensure_phantom_records
    from tfrecords_builder.index import read_index

    config = load_config(None, {"phantom_preset": "default", "phantom_cases": 8, "phantom_frames_per_case": 6})
    records = ensure_phantom_records(config, log=lambda line: print(line, file=sys.stderr))
    splits = make_splits(case_tasks_from_index(read_index(records)), n_test_cases=2, repeats=1, folds=2)
    write_splits(work / "calibration-splits.json", splits)
    return run_data({"data": str(records), "splits": str(work / "calibration-splits.json")})


def decisive_heads(model, images) -> None:
    """Scale each head's logits to a spread of 3 on `images` (an untrained model's are all near 1 / classes)."""
    import numpy as np

    for task, p in model.predict(images, verbose=0).items():
        log_p = np.log(np.maximum(p, 1e-12))
        centred = log_p - log_p.mean(-1, keepdims=True)
        factor = 3.0 / float(centred.std())
        layer = model.get_layer(f"{task}_head_logits")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * factor, (bias - centred.reshape(-1, p.shape[-1]).mean(0)) * factor])


def export_child(args) -> int:
    """Child process (argv: work arch width precisions): the full-size export; prints JSON."""
    import cv2
    import keras
    import numpy as np

    from ivus_tf.export import export_onnx
    from ivus_tf.export.reduced import add_precisions
    from ivus_tf.models import build_model

    work, arch, width, precisions = Path(args[0]), args[1], float(args[2]), tuple(args[3].split(","))
    keras.utils.set_random_seed(0)
    model = build_model(arch, ("calcium", "wall_lumen"), input_shape=(256, 256, 1), width=width)
    sample = sorted((work / "rendered").glob("*.png"))[:4]
    images = np.stack([cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (256, 256), interpolation=cv2.INTER_AREA)
                       for p in sample])[..., None].astype("float32") / 255.0
    decisive_heads(model, images)
    data = calibration_run(work) if "int8" in precisions else None
    start = time.perf_counter()
    out = work / "saved_models" / arch
    export_onnx(model, out, version=1, after=lambda src, folder, info: add_precisions(
        src, folder, info, precisions, data, calibration_frames=32, check=False,
        log=lambda line: print(line, file=sys.stderr)))
    print(json.dumps({"model": str(out / "1"), "export_s": time.perf_counter() - start,
                      "parameters": int(model.count_params())}))
    return 0


def numerics_child(args) -> int:
    """Child process (argv: model_dir pullback precisions): max |P - P_fp32| and mask agreement; prints JSON."""
    import cv2
    import numpy as np

    from ivus_tf.export import load_exported

    model_dir, pullback, precisions = args[0], Path(args[1]), args[2].split(",")
    frames = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(pullback.glob("*.png"))[:8]])
    result = {}
    for precision in precisions:
        if precision == "fp32":
            continue
        from ivus_tf.export.precision import ENGINE_OF

        engine = ENGINE_OF[precision]
        expected = load_exported(model_dir, engine=engine).predict(frames, batch_size=4)
        got = load_exported(model_dir, precision=precision).predict(frames, batch_size=4)
        result[precision] = {
            "max_abs_probability_difference": float(max(np.abs(got[k] - expected[k]).max()
                                                        for k in ("calcium_probability", "wall_lumen_probability"))),
            "calcium_mask_agreement": float((got["calcium_mask"] == expected["calcium_mask"]).mean()),
            "wall_lumen_label_agreement": float((got["wall_lumen_labels"] == expected["wall_lumen_labels"]).mean())}
    print(json.dumps(result))
    return 0


def child_json(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, env=ENV, check=True, stdout=subprocess.PIPE,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_predict(model: str, pullback: Path, out: Path, precision: str, engine: str, threads: int,
                  batch_size: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "ivus_tf.predict", "--model", model, "--input", str(pullback), "--out", str(out),
               "--pixel-spacing-mm", str(SPACING_MM), "--pullback-speed-mm-s", str(SPEED_MM_S), "--frame-rate-hz",
               str(RATE_HZ), "--report", "--precision", precision, "--engine", engine, "--batch-size",
               str(batch_size), "--io-threads", str(threads)]
    wall, cpu, rss, _, _ = benchlib.run_measured(command, ROOT, ENV)
    summary = json.loads((out / "summary.json").read_text())
    shutil.rmtree(out, ignore_errors=True)  # 3000 frames of overlays: do not keep them
    return {"wall_s": wall, "cpu_s": cpu, "rss_gb": rss,
            "frames_per_s": summary["frames_per_s"], "streaming_s": summary["seconds_predicting"],
            "command": " ".join(command[1:])}


def dice_table(run_dir: Path, work: Path) -> list[str]:
    """Export the trained run with bf16 and int8 (each scored on its test cases); the rows of the Dice table."""
    from ivus_tf.export.precision import bf16_missing

    precisions = "fp32,int8" + ("" if bf16_missing() else ",bf16")
    out = work / "dice_export"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "ivus_tf.export", str(run_dir), "--out", str(out), "--format", "onnx",
                    "--precision", precisions], cwd=ROOT, env=ENV, check=True, stdout=sys.stderr)
    info = json.loads((out / "1" / "assets.extra" / "ivus_tf_export.json").read_text())
    lines = [f"Dice change on the test cases of {run_dir} ({info['arch']}, input {info['model_input_size'][0]} px; "
             f"command: python -m ivus_tf.export {run_dir} --out DIR --format onnx --precision {precisions}):", "",
             "| precision | engine | calcium Dice fp32 -> reduced (cleaned) | change (points) | raw change | "
             "detection flips | change on the other frames | lumen / vessel change | pixels equal | offered |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for precision in ("bf16", "int8"):
        record = info.get("precisions", {}).get(precision)
        if not record or not record.get("check"):
            continue
        check, dice = record["check"], record["check"]["dice"]
        cleaned = dice.get("calcium_dice_cleaned") or dice["calcium_dice_raw"]
        raw = dice["calcium_dice_raw"]
        regions = " / ".join(f"{dice[k]['change_points']:+.2f}" for k in ("lumen_dice_cleaned", "vessel_dice_cleaned")
                             if k in dice)
        lines.append(f"| {precision} | {check['engine']} | "
                     f"{100 * cleaned['fp32']:.2f} -> {100 * cleaned[precision]:.2f}"
                     f" | {cleaned['change_points']:+.2f} | {raw['change_points']:+.2f} | "
                     f"{cleaned['detection_flips']} of {cleaned['frames']} | "
                     f"{cleaned['change_points_other_frames']:+.2f} | {regions} | "
                     f"{100 * min(check['same_label_fraction'].values()):.2f}% | "
                     f"{'yes' if record['offered'] else 'no'} |")
    return lines


def fp32_baseline(results: dict, precision: str, engine: str, io_threads: int) -> tuple[dict | None, str]:
    """(the fp32 row a row's speed-up is measured against, its engine): fp32 on the same engine, else (for a reduced
    precision whose engine's fp32 row was left out) fp32 on the other engine; (None, engine) when there is none."""
    engines = [engine] + ([e for e in ("onnxruntime", "tensorflow") if e != engine] if precision != "fp32" else [])
    for candidate in engines:
        if ("fp32", candidate, io_threads) in results:
            return results[("fp32", candidate, io_threads)], candidate
    return None, engine


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--export-child", "--numerics-child"):
        return (export_child if sys.argv[1] == "--export-child" else numerics_child)(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--unique-frames", type=int, default=60)
    parser.add_argument("--archs", nargs="+", default=["unet_res", "deeplabv3"], choices=("unet_res", "deeplabv3"))
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"], choices=("fp32", "bf16", "int8"))
    parser.add_argument("--fp32-engines", nargs="+", default=["tensorflow", "onnxruntime"],
                        choices=("tensorflow", "onnxruntime"), help="the fp32 rows (bf16 always runs on tensorflow, "
                        "int8 on onnxruntime)")
    parser.add_argument("--no-sequential", action="store_true", help="leave out the --io-threads 0 row")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--io-threads", type=int, default=2)
    parser.add_argument("--extrapolate-to", type=int, metavar="N", help="also estimate the time of N frames")
    parser.add_argument("--dice-run", type=Path, metavar="RUN_DIR", help="a trained run: measure the Dice change")
    parser.add_argument("--work", type=Path, help="keep data and exports here (default: a temporary folder)")
    args = parser.parse_args()
    from ivus_tf.export.precision import bf16_missing

    print(f"CPU at the start: {cpu_line()}", file=sys.stderr)
    before = cpu_line()
    precisions = [p for p in args.precisions if p != "bf16" or bf16_missing() is None]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_pullback-"))
    work.mkdir(parents=True, exist_ok=True)
    table, numerics, exports = [], {}, {}
    try:
        pullback = work / "pullback"
        if not pullback.is_dir() or len(list(pullback.glob("*.png"))) != args.frames:
            shutil.rmtree(pullback, ignore_errors=True)
            make_pullback(work, args.frames, args.unique_frames)
        for arch in args.archs:
            record = work / f"export-{arch}.json"
            if not record.is_file():  # --work of an earlier run: reuse its export
                shutil.rmtree(work / "saved_models" / arch, ignore_errors=True)
                record.write_text(json.dumps(child_json(["--export-child", str(work), arch, str(args.width),
                                                         ",".join(precisions)])))
            exports[arch] = json.loads(record.read_text())
            model = exports[arch]["model"]
            numerics[arch] = child_json(["--numerics-child", model, str(pullback), ",".join(precisions)])
            results = {}
            for precision, engine, threads in ROWS:
                if (precision not in precisions or (precision == "fp32" and engine not in args.fp32_engines)
                        or (threads == 0 and (args.io_threads == 0 or args.no_sequential))):
                    continue
                threads = args.io_threads if threads else 0
                print(f"{arch} {precision} {engine} io-threads {threads}: {args.frames} frames ...", file=sys.stderr)
                result = timed_predict(model, pullback, work / "out", precision, engine, threads, args.batch_size)
                results[(precision, engine, threads)] = result
                table.append((arch, precision, engine, threads, result, results))
                print(f"  {result['wall_s']:.1f} s", file=sys.stderr)
        dice = dice_table(args.dice_run, work) if args.dice_run else []
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nMachine at the start: {before}\nMachine at the end:   {cpu_line()}\n"
          f"date {datetime.date.today()}; command: "
          f"python bench/bench_pullback.py {' '.join(sys.argv[1:])}\n")
    print(f"{args.frames}-frame pullback, 500x500 phantom frames, full-size models (width {args.width:g}, 256 px), "
          f"batch {args.batch_size}, predict --report (masks, overlays, measurements.csv, report.html):\n")
    extra = f" | est. {args.extrapolate_to} frames (min)" if args.extrapolate_to else ""
    print("| model | precision | engine | io threads | frames | command wall (s) | streaming frames/s | CPU s/frame | "
          f"peak RSS (GB) | speed-up vs fp32 same engine: wall / streaming{extra} |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---:" + (" | ---:" if extra else "") + " |")
    for arch, precision, engine, threads, r, results in table:
        speedup, (base, base_engine) = "-", fp32_baseline(results, precision, engine, args.io_threads)
        if base is not None and base is not r:
            speedup = f"{base['wall_s'] / r['wall_s']:.2f}x / {r['frames_per_s'] / base['frames_per_s']:.2f}x"
            speedup += " (no overlap)" if threads != args.io_threads else ""
            speedup += f" (vs fp32 {base_engine})" if base_engine != engine else ""
        estimate = ""
        if args.extrapolate_to:
            startup = r["wall_s"] - r["streaming_s"]
            estimate = f" | {(startup + args.extrapolate_to / r['frames_per_s']) / 60:.1f}"
        print(f"| {arch} w{args.width:g} ({exports[arch]['parameters'] / 1e6:.1f} M) | {precision} | {engine} | "
              f"{threads} | {args.frames} | {r['wall_s']:.1f} | {r['frames_per_s']:.2f} | "
              f"{r['cpu_s'] / args.frames:.3f} | {r['rss_gb']:.2f} | {speedup}{estimate} |")
    print("\nNumerics of the full-size models (random weights, decisive heads) on 8 pullback frames vs fp32 on the "
          "same engine:\n")
    print("| model | precision | max abs probability difference | calcium mask agreement "
          "| wall/lumen label agreement |")
    print("| --- | --- | ---: | ---: | ---: |")
    for arch, result in numerics.items():
        for precision, n in result.items():
            print(f"| {arch} | {precision} | {n['max_abs_probability_difference']:.2e} | "
                  f"{100 * n['calcium_mask_agreement']:.3f}% | {100 * n['wall_lumen_label_agreement']:.3f}% |")
    if dice:
        print()
        print("\n".join(dice))
    return 0


if __name__ == "__main__":
    sys.exit(main())
