"""`export_tensorrt`: TensorRT engines (fp32, fp16) built from the ONNX export, when TensorRT and a GPU are here.

TF-TRT left the TensorFlow wheels with 2.18, so engines are built from `model.onnx` with the `tensorrt` Python
package (`pip install tensorrt-cu12` on a CUDA 12 machine). The ONNX graph has dynamic N, H, W, so the engine gets
one optimisation profile (min / opt / max shapes of `frames`, default 1x128x128 / 1x512x512 / 16x1024x1024).

fp16: TensorRT up to 10.x builds it from the fp32 ONNX with the FP16 builder flag (what `trtexec --fp16` does).
TensorRT 11 removed that flag ("strongly typed networks"), so there the float ONNX is first converted to float16
with float32 inputs/outputs kept (onnxconverter-common; written as `model_fp16.onnx`) and built as is.

Without the package or a usable GPU, `export_tensorrt` writes nothing and raises `TensorRTUnavailable`, whose
message says what is missing and whose `commands` export the ONNX here and build the engines with `trtexec`.
"""

from __future__ import annotations

from pathlib import Path

from ivus_tf.core.commands import python
from ivus_tf.core.errors import InputError
from ivus_tf.export.layout import INPUT_NAME, ONNX_NAME
from ivus_tf.export.onnx_export import DEFAULT_OPSET, _import_tf2onnx, add_onnx
from ivus_tf.export.savedmodel import folder_mb, new_version

PRECISIONS = ("fp32", "fp16")
PLAN_NAMES = {"fp32": "model_fp32.plan", "fp16": "model_fp16.plan"}
FP16_ONNX_NAME = "model_fp16.onnx"
DEFAULT_PROFILE = ((1, 128, 128), (1, 512, 512), (16, 1024, 1024))
WORKSPACE_BYTES = 4 << 30


class TensorRTUnavailable(InputError):
    """TensorRT or a GPU is missing; `commands` say how to build the engines elsewhere."""

    def __init__(self, message: str, commands: list[str]):
        super().__init__(message)
        self.commands = list(commands)


def parse_profile(text: str) -> tuple[tuple[int, int, int], ...]:
    """'1x128x128,1x512x512,16x1024x1024' -> min, opt, max shapes of `frames` (N x H x W), checked."""
    try:
        shapes = tuple(tuple(int(v) for v in part.strip().lower().split("x")) for part in text.split(","))
    except ValueError:
        shapes = ()
    if len(shapes) != 3 or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise InputError(f"TensorRT profile {text!r}: expected MIN,OPT,MAX shapes NxHxW, e.g. "
                         "1x128x128,1x512x512,16x1024x1024")
    if any(a > b for lo, hi in zip(shapes, shapes[1:]) for a, b in zip(lo, hi)):
        raise InputError(f"TensorRT profile {text!r}: shapes must grow from MIN to OPT to MAX")
    return shapes


def _shape_text(shape) -> str:
    return "x".join(str(v) for v in shape)


def trtexec_commands(version_dir: Path, precisions=PRECISIONS, profile=DEFAULT_PROFILE) -> list[str]:
    """The trtexec lines that build `model_<precision>.plan` from `version_dir/model.onnx`."""
    shapes = " ".join(f"--{kind}Shapes={INPUT_NAME}:{_shape_text(shape)}"
                      for kind, shape in zip(("min", "opt", "max"), profile))
    onnx_path = Path(version_dir) / ONNX_NAME
    return [f"trtexec --onnx={onnx_path} --saveEngine={Path(version_dir) / PLAN_NAMES[p]} {shapes}"
            + (" --fp16" if p == "fp16" else "") for p in precisions]


def tensorrt_missing() -> str | None:
    """None when the `tensorrt` package imports and can create a builder on a GPU; else what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt-cu12, on an NVIDIA GPU machine)"
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as error:  # CUDA initialisation failure and friends
        builder, reason = None, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    else:
        reason = "the builder could not be created"
    if builder is None:
        return f"tensorrt {trt.__version__} is installed but finds no usable NVIDIA GPU ({reason})"
    return None


def _network_flags(trt, strongly_typed: bool) -> int:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "EXPLICIT_BATCH"):  # required before TensorRT 10, the default since
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if strongly_typed and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def float16_onnx(src: Path, dst: Path) -> None:
    """A float16 copy of the ONNX model with float32 inputs/outputs kept (for TensorRT >= 11's fp16 engines)."""
    import onnx
    try:
        from onnxconverter_common import float16
    except ImportError as error:
        raise InputError("fp16 engines on TensorRT >= 11 need onnxconverter-common: pip install 'ivus-tf[export]'"
                         ) from error
    model = onnx.load(str(src))
    # The uint8 -> float cast of the input must stay float32: the converter would retype its output to float16
    # without changing the cast (an invalid model); blocked, it gets a float32 -> float16 cast after it.
    input_casts = [n.name for n in model.graph.node if n.op_type == "Cast" and INPUT_NAME in n.input]
    model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=input_casts)
    onnx.save(model, str(dst))


def build_engine(onnx_path: Path, plan_path: Path, profile=DEFAULT_PROFILE, fp16_flag: bool = False,
                 strongly_typed: bool = False, workspace_bytes: int = WORKSPACE_BYTES) -> dict:
    """Build and write a serialized TensorRT engine from an ONNX file; return its input/output tensors."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    optimization.set_shape(INPUT_NAME, *[tuple(s) for s in profile])
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT wrote {plan_path} but cannot load it back")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return {name: {"mode": str(engine.get_tensor_mode(name)).split(".")[-1].lower(),
                   "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower()} for name in names}


def export_tensorrt(model_or_run_dir, out_dir: str | Path, version: int = 1, overwrite: bool = False,
                    precisions=PRECISIONS, profile=DEFAULT_PROFILE, opset: int = DEFAULT_OPSET, after=None) -> Path:
    """Export the SavedModel and ONNX version folder plus one TensorRT engine per precision (`model_fp16.plan`,
    ...); raise `TensorRTUnavailable` (writing nothing) when TensorRT or a GPU is missing."""
    precisions = tuple(precisions)
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise InputError(f"TensorRT precisions {list(precisions)}: choose from {', '.join(PRECISIONS)}")
    target = Path(out_dir) / str(version)
    missing = tensorrt_missing()
    if missing:
        source = model_or_run_dir if isinstance(model_or_run_dir, (str, Path)) else "RUN_DIR"
        raise TensorRTUnavailable(
            f"--format tensorrt: {missing}; nothing written. Export ONNX here and build the engines on a GPU "
            "machine with trtexec as below (the --fp16 line needs TensorRT 10 or older; with TensorRT 11 run "
            "--format tensorrt on that machine instead):",
            [f"{python()} -m ivus_tf.export {source} --out {out_dir} --version {version} --format onnx"]
            + trtexec_commands(target, precisions, profile))
    import tensorrt as trt

    _import_tf2onnx()
    with new_version(model_or_run_dir, out_dir, version, overwrite) as (src, tmp, module, info):
        add_onnx(src, tmp, module, info, opset=opset)
        engines = {}
        for precision in precisions:
            onnx_path, fp16_flag = tmp / ONNX_NAME, False
            if precision == "fp16":
                if hasattr(trt.BuilderFlag, "FP16"):
                    fp16_flag = True
                else:
                    onnx_path = tmp / FP16_ONNX_NAME
                    float16_onnx(tmp / ONNX_NAME, onnx_path)
                    info["files"]["onnx_fp16"] = FP16_ONNX_NAME
            tensors = build_engine(onnx_path, tmp / PLAN_NAMES[precision], profile, fp16_flag=fp16_flag,
                                   strongly_typed=onnx_path.name == FP16_ONNX_NAME)
            engines[precision] = {"file": PLAN_NAMES[precision], "built_from": onnx_path.name,
                                  "fp16_builder_flag": fp16_flag, "io_tensors": tensors,
                                  "size_mb": round(folder_mb(tmp / PLAN_NAMES[precision]), 3)}
        info["files"]["tensorrt"] = {p: e["file"] for p, e in engines.items()}
        info["tensorrt"] = {"version": trt.__version__, "profile": {k: list(s) for k, s in
                                                                    zip(("min", "opt", "max"), profile)},
                            "engines": engines,
                            "note": "engines run only on the GPU model and TensorRT version that built them"}
        if after is not None:
            after(src, tmp, info)
    return target
