"""Reduced-precision inference: which precisions exist, where they run, and whether an export offers one.

    fp32   the export as trained (SavedModel on TensorFlow, model.onnx on ONNX Runtime)
    bf16   the SavedModel on TensorFlow with oneDNN's automatic mixed precision (grappler's
           `auto_mixed_precision_onednn_bfloat16`): convolutions and matmuls in bfloat16, softmax and the serving
           graph's resizes in float32. No extra file: the fp32 weights are cast when the graph is optimised. Needs a
           CPU with AVX512-BF16 or AMX-BF16 (/proc/cpuinfo flags `avx512_bf16`, `amx_bf16`); refused elsewhere,
           where oneDNN would emulate it more slowly than fp32.
    int8   `model_int8.onnx` on ONNX Runtime: convolutions statically quantized (QDQ, per-channel int8 weights,
           uint8 activations) with ranges calibrated on training frames (`ivus_tf.export.quantize`)
    fp16   TensorRT engines on an NVIDIA GPU (`model_fp16.plan`, `ivus_tf.export.tensorrt_engine`); built by the
           export, served by TensorRT / Triton, not run by `predict`

A reduced precision is OFFERED only when its calcium Dice on the run's test cases moved by at most
`MAX_DICE_CHANGE_POINTS` (0.5 percentage points) from fp32 on the same engine, for raw and for cleaned masks
(`ivus_tf.export.precision_check`, recorded under "precisions" in the export record). `check_offered` is what
`predict --precision` applies: a measured change beyond the limit refuses the run with one line; a precision never
measured (an export made without test cases) runs with a one-line warning.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ivus_tf.core.errors import InputError

PRECISIONS = ("fp32", "bf16", "int8", "fp16")
PREDICT_PRECISIONS = ("fp32", "bf16", "int8")
ENGINE_OF = {"bf16": "tensorflow", "int8": "onnxruntime"}
INT8_ONNX_NAME = "model_int8.onnx"
MAX_DICE_CHANGE_POINTS = 0.5
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_OPTION = "auto_mixed_precision_onednn_bfloat16"
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path | None = None) -> set[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty where there is no such file)."""
    cpuinfo = CPUINFO if cpuinfo is None else cpuinfo
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.split(":")[0].strip() == "flags"), "")
    return set(line.split(":", 1)[1].split()) if ":" in line else set()


def bf16_missing(cpuinfo: Path | None = None) -> str | None:
    """None when this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16); else why bf16 is refused."""
    cpuinfo = CPUINFO if cpuinfo is None else cpuinfo
    flags = cpu_flags(cpuinfo)
    if any(flag in flags for flag in BF16_CPU_FLAGS):
        return None
    if not flags:
        return f"cannot read the CPU's flags from {cpuinfo} to check for bfloat16 support"
    return "this CPU has neither avx512_bf16 nor amx_bf16 (bfloat16 would be emulated, slower than fp32)"


def require_bf16(where: str = "--precision bf16") -> None:
    missing = bf16_missing()
    if missing:
        raise InputError(f"{where}: {missing}; use fp32 (or int8 on ONNX Runtime)")


@contextlib.contextmanager
def bf16_graphs(tf):
    """TensorFlow functions called inside the block run with oneDNN's bfloat16 auto mixed precision; the option is
    process-wide, so it is restored on exit (TensorFlow caches one optimised graph per setting)."""
    before = bool(tf.config.optimizer.get_experimental_options().get(BF16_OPTION, False))
    tf.config.optimizer.set_experimental_options({BF16_OPTION: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({BF16_OPTION: before})


def check_precision(precision: str, what: str = "--precision") -> str:
    if precision not in PREDICT_PRECISIONS:
        extra = (" (fp16 runs as TensorRT engines, built by python -m ivus_tf.export --format tensorrt and served "
                 "by TensorRT or Triton)") if precision == "fp16" else ""
        raise InputError(f"{what} {precision!r}: choose from {', '.join(PREDICT_PRECISIONS)}{extra}")
    return precision


def engine_for(precision: str, engine: str, where: str) -> str:
    """The engine that runs `precision` given the requested `engine` ("auto" picks it); one line when they clash."""
    wanted = ENGINE_OF.get(precision)
    if wanted is None or engine in ("auto", wanted):
        return engine if wanted is None else wanted
    raise InputError(f"{where}: --precision {precision} runs on {wanted}, not on --engine {engine}")


def check_offered(info: dict, precision: str, where: str) -> str | None:
    """Refuse `precision` (InputError, one line) when the export's measured calcium Dice change exceeds the limit;
    return a warning line when it was never measured; None when it is offered (or is fp32)."""
    if precision == "fp32":
        return None
    record = (info.get("precisions") or {}).get(precision)
    check = (record or {}).get("check")
    if not check:
        return (f"{where}: {precision} was not checked against fp32 on test cases for this export (export it from "
                f"a training run with --precision {precision} to measure it); its Dice change is unknown")
    if not record.get("offered"):
        change = check["calcium_dice_change_points"]
        return _refuse(where, precision, change, check.get("limit_points", MAX_DICE_CHANGE_POINTS))
    return None


def _refuse(where, precision, change, limit):
    raise InputError(f"{where}: {precision} is not offered for this model: its calcium Dice on the test cases "
                     f"changed by {change:+.2f} points vs fp32 (limit {limit:g}); use fp32")


def offered(changes_points: list[float], limit: float = MAX_DICE_CHANGE_POINTS) -> bool:
    """True when every measured calcium Dice change (raw and cleaned masks) is within +-`limit` points."""
    return bool(changes_points) and all(abs(c) <= limit for c in changes_points)
