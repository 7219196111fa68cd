"""int8: `model_int8.onnx`, the ONNX export with its convolutions statically quantized by ONNX Runtime.

    quantize_int8(version_dir, TrainingFrames(records_dir, train_case_ids))   -> version_dir/model_int8.onnx

`onnxruntime.quantization.quantize_static` in QDQ format: every Conv gets int8 weights with one scale per output
channel (per-channel: a ResNet's filters differ in range by orders of magnitude) and uint8 activations with one
scale and zero point per tensor, fixed by calibration (ONNX Runtime fuses each QuantizeLinear -> Conv ->
DequantizeLinear group into one integer convolution, VNNI instructions where the CPU has them). Everything else of
the serving graph (the uint8 -> float cast, both resizes, softmax, argmax) stays float32, so the int8 model takes
and returns exactly what `model.onnx` does.

Calibration runs the float model on TRAINING frames of the run (the train cases of its repeat and fold, read from
its records; never a test case, whose frames score the result) and records each activation's range (`minmax`, the
default, or `percentile` / `entropy` histograms). Frames are fed raw (uint8 [1, H, W], at their own size), as
`predict` feeds them, so the in-graph resize is calibrated too. `TrainingFrames` spreads `max_frames` evenly over
the training cases' frames.

Quantized kernels on x86 CPUs without AVX512-VNNI/AVX-VNNI can saturate u8 x s8 products; the Dice check
(`ivus_tf.export.precision_check`) measures the model on the machine that exports it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.export.layout import INPUT_NAME, ONNX_NAME
from ivus_tf.export.precision import INT8_ONNX_NAME

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_CALIBRATION_FRAMES = 32
QUANTIZED_OPS = ("Conv",)


def _ort_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as error:
        raise InputError("int8 export needs onnxruntime (its quantization tools): pip install 'ivus-tf[export]'"
                         ) from error
    return quantization


def evenly_spaced(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total) (all of them when count >= total)."""
    if count >= total:
        return list(range(total))
    return sorted({int(math.floor((i + 0.5) * total / count)) for i in range(count)})


class TrainingFrames:
    """Calibration frames: raw uint8 frames of `case_ids` (the run's training cases) from a records folder.

    `chosen` lists the (case_id, frame_id) pairs used. Implements ONNX Runtime's CalibrationDataReader protocol
    (`get_next` -> {"frames": uint8 [1, H, W]} or None; `rewind`)."""

    def __init__(self, records_dir: str | Path, case_ids: Sequence[str], max_frames: int = DEFAULT_CALIBRATION_FRAMES):
        from tfrecords_builder.index import read_index

        case_ids = sorted(case_ids)
        if not case_ids:
            raise InputError(f"{records_dir}: no training cases to calibrate int8 on")
        if int(max_frames) < 1:
            raise InputError(f"calibration frames must be >= 1, got {max_frames}")
        index = read_index(records_dir)
        unknown = [c for c in case_ids if c not in index["cases"]]
        if unknown:
            raise InputError(f"{records_dir}: training case(s) {', '.join(unknown[:5])} are not in these records")
        total = sum(int(index["cases"][c]["frames"]) for c in case_ids)
        wanted = set(evenly_spaced(total, int(max_frames)))
        from ivus_tf.data.records import iterate_frames

        self.images, self.chosen = [], []
        for position, frame in enumerate(iterate_frames(records_dir, case_ids)):
            if position in wanted:
                self.images.append(np.ascontiguousarray(frame["image"], np.uint8))
                self.chosen.append((frame["case_id"], frame["frame_id"]))
        self.records_dir, self.case_ids = str(records_dir), list(case_ids)
        self._next = 0

    def get_next(self):
        if self._next >= len(self.images):
            return None
        self._next += 1
        return {INPUT_NAME: self.images[self._next - 1][None]}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.images)


def _reader(frames: TrainingFrames):
    """Wrap `frames` in a real CalibrationDataReader subclass (ONNX Runtime checks the type)."""
    quantization = _ort_quantization()

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return frames.get_next()

        def rewind(self):
            frames.rewind()

    return Reader()


def quantize_int8(version_dir: str | Path, frames: TrainingFrames, method: str = "minmax",
                  target_name: str = INT8_ONNX_NAME) -> dict:
    """Write `version_dir/model_int8.onnx` from `version_dir/model.onnx`, calibrated on `frames`; return what the
    export record keeps about it."""
    if method not in CALIBRATION_METHODS:
        raise InputError(f"int8 calibration {method!r}: choose from {', '.join(CALIBRATION_METHODS)}")
    quantization = _ort_quantization()
    version_dir = Path(version_dir)
    source = version_dir / ONNX_NAME
    if not source.is_file():
        raise InputError(f"{version_dir}: no {ONNX_NAME} to quantize (int8 needs --format onnx)")
    methods = {"minmax": quantization.CalibrationMethod.MinMax,
               "percentile": quantization.CalibrationMethod.Percentile,
               "entropy": quantization.CalibrationMethod.Entropy}
    frames.rewind()
    start = time.perf_counter()
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice is for static-shape models
    try:
        quantization.quantize_static(
            str(source), str(version_dir / target_name), _reader(frames),
            quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=methods[method])
    finally:
        logging.getLogger().setLevel(level)
    seconds = time.perf_counter() - start
    return {"file": target_name, "engine": "onnxruntime", "format": "QDQ", "quantized_ops": list(QUANTIZED_OPS),
            "weights": "int8, symmetric, per output channel", "activations": "uint8, per tensor",
            "calibration": {"method": method, "frames": len(frames), "records": frames.records_dir,
                            "cases": frames.case_ids, "split": "train cases of the run's repeat and fold",
                            "seconds": round(seconds, 1)},
            "size_mb": round((version_dir / target_name).stat().st_size / 1e6, 3)}
