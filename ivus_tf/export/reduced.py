"""The export's reduced precisions: build what each needs, measure it against fp32, record whether it is offered.

    python -m ivus_tf.export RUN_DIR --out saved_models/NAME --format onnx --precision fp32,bf16,int8

Called inside the export's temporary version folder (`add_precisions`), after the SavedModel and model.onnx:

1. int8: `model_int8.onnx`, calibrated on the run's TRAINING frames (`ivus_tf.export.quantize`);
   bf16: nothing to build (oneDNN casts the SavedModel's graph at run time; `ivus_tf.export.precision`).
2. Each is scored against fp32 on the run's TEST cases (`ivus_tf.export.precision_check`): summary under
   "precisions" in `assets.extra/ivus_tf_export.json`, per-frame Dice in `assets.extra/precision_check.json`.

The run's records folder, splits file, repeat and fold come from its config.yaml (`--records` / `--splits`
override them, e.g. for a run folder copied from another machine, or for a bare .keras file). Without records
and splits, int8 cannot be calibrated (refused) and bf16 is recorded as not measured (predict then warns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ivus_tf.core.atomic import json_text
from ivus_tf.core.errors import InputError
from ivus_tf.export.layout import EXTRA_DIR
from ivus_tf.export.precision import PRECISIONS, require_bf16

CHECK_NAME = "precision_check.json"
REDUCED = ("bf16", "int8")


@dataclass(frozen=True)
class RunData:
    """Where a run's frames are and which cases it trained and tested on."""

    records_dir: Path
    splits_path: Path
    train_cases: tuple[str, ...]
    test_cases: tuple[str, ...]
    repeat: int
    fold: int
    postprocess: str


def parse_precisions(text: str, fmt: str) -> tuple[str, ...]:
    """'fp32,int8' -> ('fp32', 'int8'), checked against the export format (one line when they do not fit)."""
    precisions = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    unknown = [p for p in precisions if p not in PRECISIONS]
    if not precisions or unknown:
        raise InputError(f"--precision {text!r}: choose from {', '.join(PRECISIONS)} (comma-separated)")
    if "fp16" in precisions and fmt != "tensorrt":
        raise InputError("--precision fp16 builds TensorRT engines: it needs --format tensorrt (and an NVIDIA GPU)")
    if "int8" in precisions and fmt == "savedmodel":
        raise InputError("--precision int8 quantizes model.onnx: it needs --format onnx (or tensorrt)")
    if "bf16" in precisions:
        require_bf16("--precision bf16")
    return precisions


def run_data(config: dict | None, records: str | None = None, splits: str | None = None) -> RunData | None:
    """The run's records, splits and cases (flags override config.yaml); None when neither says where they are."""
    from ivus_tf.splits import fold_cases, read_splits

    config = config or {}
    records_dir = records or config.get("data") or None
    splits_path = splits or config.get("splits") or None
    if not records_dir and not splits_path:
        return None
    if not records_dir or not splits_path:
        missing = "--records (the run's records folder)" if not records_dir else "--splits (the run's splits file)"
        raise InputError(f"reduced-precision export: {missing} is needed to calibrate and check it")
    records_dir, splits_path = Path(records_dir), Path(splits_path)
    if not records_dir.is_dir():
        raise InputError(f"{records_dir}: no such records folder (the run's data; pass --records DIR)")
    repeat, fold = int(config.get("repeat", 0)), int(config.get("fold", 0))
    split = read_splits(splits_path)
    train, _, test = fold_cases(split, repeat, fold)
    overlap = sorted(set(train) & set(test))
    if overlap:  # validate_splits refuses this already; calibration on a test case would be a leak
        raise InputError(f"{splits_path}: case(s) {', '.join(overlap[:5])} are both training and test cases")
    return RunData(records_dir, splits_path, tuple(train), tuple(test), repeat, fold,
                   str(config.get("postprocess", "default")))


def add_precisions(src, folder: Path, info: dict, precisions: Sequence[str], data: RunData | None,
                   calibration_frames: int, calibration_method: str = "minmax", check: bool = True,
                   log=print) -> None:
    """Build, check and record the reduced precisions among `precisions` in the export folder `folder`."""
    from ivus_tf.export.loader import ExportedModel

    wanted = [p for p in precisions if p in REDUCED]
    records = info.setdefault("precisions", {})
    records["fp32"] = {"engines": ["tensorflow"] + (["onnxruntime"] if "onnx" in info["files"] else [])}
    if "fp16" in precisions and "tensorrt" in info:
        records["fp16"] = {"engine": "tensorrt", "file": info["tensorrt"]["engines"]["fp16"]["file"], "check": None,
                           "offered": None, "note": "served by TensorRT/Triton on the GPU that built it; not run "
                                                    "by predict, so not scored here"}
    if not wanted:
        return
    if "int8" in wanted:
        if data is None:
            raise InputError(f"{src.source}: --precision int8 is calibrated on the run's training frames: export a "
                             "training run folder, or pass --records DIR --splits FILE")
        from ivus_tf.export.quantize import TrainingFrames, quantize_int8

        frames = TrainingFrames(data.records_dir, data.train_cases, calibration_frames)
        log(f"  int8: calibrating on {len(frames)} training frames of {len(data.train_cases)} cases")
        records["int8"] = quantize_int8(folder, frames, calibration_method)
        info["files"]["onnx_int8"] = records["int8"]["file"]
        info["sizes_mb"]["onnx_int8"] = records["int8"]["size_mb"]
    if "bf16" in wanted:
        records["bf16"] = {"engine": "tensorflow", "how": "oneDNN auto mixed precision "
                           "(auto_mixed_precision_onednn_bfloat16) on the SavedModel at run time; no extra file",
                           "needs": "a CPU with avx512_bf16 or amx_bf16"}
    per_frame = {}
    for precision in wanted:
        if data is None or not check:
            records[precision]["check"] = None
            records[precision]["offered"] = None
            continue
        from ivus_tf.export.precision_check import measure_precision
        from ivus_tf.postprocess import load_postprocess

        engine = records[precision]["engine"]
        log(f"  {precision}: scoring it and fp32 ({engine}) on {len(data.test_cases)} test cases")
        result = measure_precision(folder, precision, data.records_dir, data.test_cases,
                                   image_size=int(info["model_input_size"][0]),
                                   postprocess=load_postprocess(data.postprocess),
                                   fp32_model=ExportedModel(folder, info, engine, "fp32"),
                                   reduced_model=ExportedModel(folder, info, engine, precision))
        per_frame[precision] = result.pop("per_frame")
        records[precision]["check"] = {**result, "splits": str(data.splits_path), "repeat": data.repeat,
                                       "fold": data.fold, "per_frame_file": f"{EXTRA_DIR}/{CHECK_NAME}"}
        records[precision]["offered"] = result["offered"]
    if per_frame:
        extra = folder / EXTRA_DIR
        extra.mkdir(exist_ok=True)
        (extra / CHECK_NAME).write_text(json_text(per_frame), encoding="utf-8")
