"""`load_exported`: run an export on ONNX Runtime or TensorFlow behind one `predict(frames)`.

    from ivus_tf.export import load_exported
    model = load_exported("saved_models/calcium")        # NAME (its highest version) or NAME/V
    model.engine                                         # "onnxruntime" or "tensorflow"
    outputs = model.predict(frames)                      # uint8 [N, H, W] -> {"calcium_mask": uint8 [N, H, W], ...}

`engine="auto"` takes ONNX Runtime when the version has `model.onnx` and `onnxruntime` imports (the export issue's
choice; measured speeds of both engines: `bench/bench_export.py`), else the SavedModel. Both run the same serving
graph (`ivus_tf.export.serving`), so the outputs agree up to float rounding. TensorFlow is imported only for the
"tensorflow" engine, so an ONNX Runtime predict starts without TensorFlow's few seconds of import.

`precision` (`ivus_tf.export.precision`): "fp32" (default), "bf16" (the SavedModel on TensorFlow with oneDNN's
bfloat16 auto mixed precision, on CPUs with AVX512-BF16/AMX) or "int8" (`model_int8.onnx` on ONNX Runtime). A
precision picks its engine; asking for another engine is an error. Whether the export OFFERS the precision (its
measured Dice change) is `predict`'s check (`precision.check_offered`), not the loader's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.export.layout import INPUT_NAME, ONNX_NAME, OUTPUT_SPECS, find_version_dir, output_names, read_info
from ivus_tf.export.precision import INT8_ONNX_NAME, bf16_graphs, check_precision, engine_for, require_bf16

ENGINES = ("auto", "onnxruntime", "tensorflow")
INSTALL_HINT = "pip install 'ivus-tf[export]'"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_session(path: Path):
    """An ONNX Runtime session on the best available provider (CUDA when onnxruntime-gpu sees a GPU, else CPU)."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise InputError(f"running ONNX models needs onnxruntime: {INSTALL_HINT}") from error
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise InputError(f"frames have dtype {frames.dtype}; the export takes raw 8-bit frames (uint8)")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[3] == 1)) or min(frames.shape[1:3]) < 1:
        raise InputError(f"frames have shape {list(frames.shape)}; expected uint8 [N, H, W] or [N, H, W, 1]")
    return frames if frames.ndim == 3 else frames[..., 0]


class ExportedModel:
    """An export ready to run. `engine`: "onnxruntime" or "tensorflow"; `precision`; `tasks`; `info`: the export
    record."""

    def __init__(self, path: Path, info: dict, engine: str, precision: str = "fp32"):
        self.path, self.info, self.engine, self.precision = Path(path), info, engine, precision
        self.tasks = tuple(info["tasks"])
        self.output_names = output_names(self.tasks)
        self.model_input_size = tuple(info.get("model_input_size", ()))
        if engine == "onnxruntime":
            self._session = onnx_session(self.path / (INT8_ONNX_NAME if precision == "int8" else ONNX_NAME))
            self.providers = tuple(self._session.get_providers())
            self._run = self._run_onnxruntime
        else:
            from ivus_tf.core.tf_import import import_tensorflow

            self._tf = tf = import_tensorflow()
            self._loaded = tf.saved_model.load(str(self.path))  # keep it: the signature needs its variables
            self._signature = self._loaded.signatures["serving_default"]
            self.providers = tuple(d.device_type for d in tf.config.list_logical_devices())
            self._run = self._run_tensorflow

    @property
    def description(self) -> str:
        """For logs: which engine, on what, from where."""
        return f"{self.engine} {self.precision} ({', '.join(self.providers)}) on {self.path}"

    def _run_onnxruntime(self, frames: np.ndarray) -> dict:
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(None, {INPUT_NAME: frames})))

    def _run_tensorflow(self, frames: np.ndarray) -> dict:
        if self.precision == "bf16":
            with bf16_graphs(self._tf):
                return {k: v.numpy() for k, v in self._signature(**{INPUT_NAME: frames}).items()}
        return {k: v.numpy() for k, v in self._signature(**{INPUT_NAME: frames}).items()}

    def predict(self, frames, batch_size: int = 8) -> dict[str, np.ndarray]:
        """uint8 frames [N, H, W] (or [N, H, W, 1]) -> {output name: array at the frames' size}, `batch_size`
        frames at a time (a whole pullback at once would need gigabytes of activations)."""
        frames = _check_frames(frames)
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        n, height, width = frames.shape
        if n == 0:
            return {name: np.zeros((0, height, width) + ((3,) if name == "wall_lumen_probability" else ()),
                                   OUTPUT_SPECS[name][0]) for name in self.output_names}
        parts = [self._run(np.ascontiguousarray(frames[i:i + batch_size])) for i in range(0, n, batch_size)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def __repr__(self) -> str:
        return f"ExportedModel({self.description}, tasks={list(self.tasks)})"


def load_exported(path: str | Path, engine: str = "auto", precision: str = "fp32") -> ExportedModel:
    """Load an export folder (`NAME/V`, or `NAME` for its highest version) on `engine` ("auto", "onnxruntime",
    "tensorflow") at `precision` ("fp32", "bf16", "int8"); `InputError` when the folder is not an export or the
    engine cannot run it."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    check_precision(precision)
    version_dir = find_version_dir(path)
    info = read_info(version_dir)
    engine = engine_for(precision, engine, str(version_dir))
    if precision == "bf16":
        require_bf16()
    if precision == "int8":
        if not (version_dir / INT8_ONNX_NAME).is_file():
            raise InputError(f"{version_dir}: no {INT8_ONNX_NAME} (export with --format onnx --precision int8)")
        if not onnxruntime_available():
            raise InputError(f"running int8 models needs onnxruntime: {INSTALL_HINT}")
        return ExportedModel(version_dir, info, engine, precision)
    has_onnx = (version_dir / ONNX_NAME).is_file()
    if engine == "auto":
        engine = "onnxruntime" if has_onnx and onnxruntime_available() else "tensorflow"
    elif engine == "onnxruntime" and not has_onnx:
        raise InputError(f"{version_dir}: no {ONNX_NAME} (export with --format onnx to run it on ONNX Runtime)")
    if engine == "tensorflow" and not (version_dir / "saved_model.pb").is_file():
        raise InputError(f"{version_dir}: no saved_model.pb: the SavedModel is missing")
    return ExportedModel(version_dir, info, engine, precision)
