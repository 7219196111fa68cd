"""Exporting trained models for serving, and loading the exports back.

    python -m ivus_tf.export RUN_DIR --out saved_models/NAME [--version V] [--format savedmodel|onnx|tensorrt]

* `export_savedmodel` (`savedmodel.py`): TF Serving's `NAME/V/` SavedModel whose `serving_default` signature takes
  raw uint8 frames of any size and returns named outputs at that size (graph in `serving.py`).
* `export_onnx` (`onnx_export.py`): the same plus `NAME/V/model.onnx`, checked against TensorFlow.
* `export_tensorrt` (`tensorrt_engine.py`): the same plus TensorRT engines, where TensorRT and a GPU are present.
* `load_exported` (`loader.py`): an export on ONNX Runtime or TensorFlow behind `predict(frames)`.

Importing this package is light: the exporters (which import TensorFlow) load on first use.
"""

from ivus_tf.export.layout import OUTPUTS, find_version_dir, output_names, read_info
from ivus_tf.export.loader import ENGINES, ExportedModel, load_exported

_LAZY = {
    "export_savedmodel": "ivus_tf.export.savedmodel",
    "export_onnx": "ivus_tf.export.onnx_export",
    "export_tensorrt": "ivus_tf.export.tensorrt_engine",
    "TensorRTUnavailable": "ivus_tf.export.tensorrt_engine",
}

__all__ = ["ENGINES", "ExportedModel", "OUTPUTS", "export_onnx", "export_savedmodel", "export_tensorrt",
           "find_version_dir", "load_exported", "output_names", "read_info", "TensorRTUnavailable"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ivus_tf.export' has no attribute {name!r}")
