"""`python -m ivus_tf.export RUN_DIR --out saved_models/NAME [--version V] [--format savedmodel|onnx|tensorrt]
[--precision fp32,bf16,int8,fp16]` (reduced precisions: `ivus_tf.export.reduced`, docs/precision.md)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from ivus_tf.core.errors import ArgumentParser, positive_int_arg, run_cli

FORMATS = ("savedmodel", "onnx", "tensorrt")


def parse_args(argv: Sequence[str] | None = None):
    from ivus_tf.export.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION_FRAMES

    parser = ArgumentParser(
        prog="python -m ivus_tf.export",
        description="Export a trained model for serving: a TF Serving SavedModel NAME/V/ taking raw uint8 frames "
                    "[N, H, W] of any size, with preprocessing and postprocessing in the graph; optionally "
                    "model.onnx (ONNX Runtime), model_int8.onnx and TensorRT engines beside it.")
    parser.add_argument("source", help="a training run folder (with model.keras, config.yaml) or a .keras file")
    parser.add_argument("--out", required=True, help="the model folder, e.g. saved_models/calcium")
    parser.add_argument("--version", type=int, default=1, help="version folder under --out (default 1)")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="savedmodel (default); onnx: also model.onnx; tensorrt: also TensorRT engines")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--precision", default=None, metavar="LIST",
                        help="precisions to provide, comma-separated: fp32; bf16 (TensorFlow + oneDNN on CPUs with "
                             "AVX512-BF16/AMX); int8 (model_int8.onnx, needs --format onnx); fp16 (TensorRT "
                             "engine, --format tensorrt). bf16 and int8 are scored against fp32 on the run's test "
                             "cases and offered only within 0.5 Dice points (default: fp32,fp16 with --format "
                             "tensorrt, else fp32)")
    parser.add_argument("--records", metavar="DIR", help="the run's records folder (default: its config.yaml's)")
    parser.add_argument("--splits", metavar="FILE", help="the run's splits file (default: its config.yaml's)")
    parser.add_argument("--calibration-frames", type=positive_int_arg, default=DEFAULT_CALIBRATION_FRAMES,
                        metavar="N", help="int8: training frames to calibrate on (default %(default)s)")
    parser.add_argument("--int8-calibration", choices=CALIBRATION_METHODS, default="minmax",
                        help="int8: how activation ranges are set from the calibration frames (default minmax)")
    parser.add_argument("--trt-profile", default="1x128x128,1x512x512,16x1024x1024",
                        help="TensorRT MIN,OPT,MAX shapes of frames, NxHxW (default %(default)s)")
    return parser.parse_args(argv)


def export_summary(version_dir, info: dict, seconds: float) -> list[str]:
    sizes = info["sizes_mb"]
    lines = [f"exported {info['source']} ({info['arch'] or 'model'}, tasks {', '.join(info['tasks'])}, "
             f"input {'x'.join(map(str, info['model_input_size']))}) -> {version_dir} in {seconds:.0f} s",
             f"  SavedModel  {sizes['savedmodel']:.1f} MB ({sizes['weights']:.1f} MB of weights); serving_default: "
             f"frames uint8 [N,H,W] -> {', '.join(info['outputs'])}"]
    if "onnx" in info["files"]:
        check = info["onnx"].get("check_against_tensorflow")
        lines.append(f"  ONNX        {info['files']['onnx']} {sizes['onnx']:.1f} MB, opset {info['onnx']['opset']}"
                     + (f"; max |ONNX Runtime - TensorFlow| probability {check['max_abs_probability_difference']:.1e}"
                        if check else ""))
    for precision, engine in info.get("tensorrt", {}).get("engines", {}).items():
        lines.append(f"  TensorRT    {engine['file']} {engine['size_mb']:.1f} MB ({precision}, TensorRT "
                     f"{info['tensorrt']['version']})")
    for precision, record in (info.get("precisions") or {}).items():
        if precision in ("bf16", "int8"):
            lines.append(f"  {precision:<11} {precision_line(precision, record)}")
    return lines


def precision_line(precision: str, record: dict) -> str:
    """One line about a reduced precision: its file, and its measured Dice change and whether it is offered."""
    where = f"{record['file']} {record['size_mb']:.1f} MB on ONNX Runtime" if "file" in record else (
        "the SavedModel on TensorFlow (oneDNN bfloat16)")
    check = record.get("check")
    if not check:
        return f"{where}; not scored on test cases (no run data): predict will warn"
    dice = check["dice"]
    headline = "calcium_dice_cleaned" if "calcium_dice_cleaned" in dice else "calcium_dice_raw"
    verdict = "OFFERED" if record["offered"] else f"NOT offered (limit +-{check['limit_points']:g} points)"
    if headline not in dice:
        return f"{where}; {verdict}"
    entry = dice[headline]
    return (f"{where}; calcium Dice {100 * entry['fp32']:.2f} -> {100 * entry[precision]:.2f} "
            f"({entry['change_points']:+.2f} points) on {entry['frames']} test frames, {entry['detection_flips']} "
            f"flipped between empty and not; "
            f"labels equal to fp32 on {100 * min(check['same_label_fraction'].values()):.2f}% of pixels: {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ivus_tf.export import read_info
    from ivus_tf.export.reduced import add_precisions, parse_precisions, run_data
    from ivus_tf.export.tensorrt_engine import TensorRTUnavailable, parse_profile

    precisions = parse_precisions(args.precision or ("fp32,fp16" if args.format == "tensorrt" else "fp32"),
                                  args.format)

    def after(src, folder, info):
        data = run_data(src.config, args.records, args.splits) if set(precisions) & {"bf16", "int8"} else None
        add_precisions(src, folder, info, precisions, data, args.calibration_frames, args.int8_calibration,
                       log=lambda line: print(line, flush=True))

    start = time.perf_counter()
    print(f"exporting {args.source} as {args.format} ({', '.join(precisions)}) -> {args.out}/{args.version}",
          flush=True)
    try:
        if args.format == "savedmodel":
            from ivus_tf.export.savedmodel import export_savedmodel
            version_dir = export_savedmodel(args.source, args.out, args.version, args.overwrite, after=after)
        elif args.format == "onnx":
            from ivus_tf.export.onnx_export import export_onnx
            version_dir = export_onnx(args.source, args.out, args.version, args.overwrite, opset=args.opset,
                                      after=after)
        else:
            from ivus_tf.export.tensorrt_engine import export_tensorrt
            engines = tuple(p for p in precisions if p in ("fp32", "fp16")) or ("fp32",)
            version_dir = export_tensorrt(args.source, args.out, args.version, args.overwrite, engines,
                                          parse_profile(args.trt_profile), opset=args.opset, after=after)
    except TensorRTUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        for command in error.commands:
            print(f"  {command}", file=sys.stderr)
        return 2
    for line in export_summary(version_dir, read_info(version_dir), time.perf_counter() - start):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
