"""What an export looks like on disk and at its signature; light (no TensorFlow), shared by exporters and loader.

    NAME/V/saved_model.pb, variables/          the SavedModel (TF Serving loads NAME/<highest V>)
    NAME/V/assets.extra/ivus_tf_export.json     the export record (`read_info`)
    NAME/V/assets.extra/config.yaml             the training run's config, when it had one
    NAME/V/model.onnx                           with --format onnx or tensorrt
    NAME/V/model_fp32.plan, model_fp16.plan     with --format tensorrt (and model_fp16.onnx on TensorRT >= 11)
"""

from __future__ import annotations

import json
from pathlib import Path

from ivus_tf.core.errors import InputError

EXTRA_DIR, INFO_NAME, CONFIG_COPY = "assets.extra", "ivus_tf_export.json", "config.yaml"
ONNX_NAME = "model.onnx"
INFO_FORMAT = "ivus-tf export 1"

INPUT_NAME = "frames"
OUTPUTS = {
    "calcium": ("calcium_probability", "calcium_mask"),
    "wall_lumen": ("wall_lumen_probability", "wall_lumen_labels"),
}
PROBABILITY_OUTPUTS = {task: names[0] for task, names in OUTPUTS.items()}
MASK_OUTPUTS = {task: names[1] for task, names in OUTPUTS.items()}
OUTPUT_SPECS = {
    "calcium_probability": ("float32", "[N, H, W]", "probability of calcium per pixel"),
    "calcium_mask": ("uint8", "[N, H, W]", "1 where calcium is the most probable class, else 0"),
    "wall_lumen_probability": ("float32", "[N, H, W, 3]", "probabilities of background, lumen, vessel wall"),
    "wall_lumen_labels": ("uint8", "[N, H, W]", "0 background, 1 lumen, 2 vessel wall (argmax)"),
}


def output_names(tasks) -> list[str]:
    """Signature output names for `tasks`, in a fixed order."""
    return [name for task in OUTPUTS if task in tasks for name in OUTPUTS[task]]


def find_version_dir(path: str | Path) -> Path:
    """`path` itself when it is a version folder, else its highest numbered version (TF Serving's choice)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such export folder")
    if (path / EXTRA_DIR / INFO_NAME).is_file() or (path / "saved_model.pb").is_file():
        return path
    versions = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir())
    if versions:
        return path / str(versions[-1])
    return path  # read_info says why it is not an export


def read_info(version_dir: str | Path) -> dict:
    """The export record of a version folder; `InputError` when the folder is not an ivus-tf export."""
    path = Path(version_dir) / EXTRA_DIR / INFO_NAME
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{version_dir}: not an ivus-tf export (no {EXTRA_DIR}/{INFO_NAME}); make one with "
                         "python -m ivus_tf.export RUN_DIR --out saved_models/NAME") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable export record: {error}") from error
    if not isinstance(info, dict) or info.get("format") != INFO_FORMAT or not info.get("tasks"):
        raise InputError(f"{path}: not an {INFO_FORMAT!r} record")
    return info
