"""`python -m ivus_tf.export RUN_DIR --out saved_models/NAME [--version V] [--format savedmodel|onnx|tensorrt]`."""

from __future__ import annotations

import sys
import time
from typing import Sequence

from ivus_tf.core.errors import ArgumentParser, run_cli

FORMATS = ("savedmodel", "onnx", "tensorrt")


def parse_args(argv: Sequence[str] | None = None):
    parser = ArgumentParser(
        prog="python -m ivus_tf.export",
        description="Export a trained model for serving: a TF Serving SavedModel NAME/V/ taking raw uint8 frames "
                    "[N, H, W] of any size, with preprocessing and postprocessing in the graph; optionally "
                    "model.onnx (ONNX Runtime) and TensorRT engines beside it.")
    parser.add_argument("source", help="a training run folder (with model.keras, config.yaml) or a .keras file")
    parser.add_argument("--out", required=True, help="the model folder, e.g. saved_models/calcium")
    parser.add_argument("--version", type=int, default=1, help="version folder under --out (default 1)")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="savedmodel (default); onnx: also model.onnx; tensorrt: also TensorRT engines")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--precision", default="fp32,fp16", help="TensorRT engines to build (default fp32,fp16)")
    parser.add_argument("--trt-profile", default="1x128x128,1x512x512,16x1024x1024",
                        help="TensorRT MIN,OPT,MAX shapes of frames, NxHxW (default %(default)s)")
    return parser.parse_args(argv)


def describe(version_dir, info: dict, seconds: float) -> list[str]:
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
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ivus_tf.export import read_info
    from ivus_tf.export.tensorrt_engine import TensorRTUnavailable, parse_profile

    start = time.perf_counter()
    print(f"exporting {args.source} as {args.format} -> {args.out}/{args.version}", flush=True)
    try:
        if args.format == "savedmodel":
            from ivus_tf.export.savedmodel import export_savedmodel
            version_dir = export_savedmodel(args.source, args.out, args.version, args.overwrite)
        elif args.format == "onnx":
            from ivus_tf.export.onnx_export import export_onnx
            version_dir = export_onnx(args.source, args.out, args.version, args.overwrite, opset=args.opset)
        else:
            from ivus_tf.export.tensorrt_engine import export_tensorrt
            precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
            version_dir = export_tensorrt(args.source, args.out, args.version, args.overwrite, precisions,
                                          parse_profile(args.trt_profile), opset=args.opset)
    except TensorRTUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        for command in error.commands:
            print(f"  {command}", file=sys.stderr)
        return 2
    for line in describe(version_dir, read_info(version_dir), time.perf_counter() - start):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
