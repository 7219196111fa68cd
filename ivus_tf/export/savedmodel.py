"""`export_savedmodel`: a trained model -> `OUT/V/`, a SavedModel in TF Serving's layout with the serving graph.

    OUT/V/saved_model.pb, OUT/V/variables/     signature `serving_default`: frames -> named outputs (`serving`)
    OUT/V/assets.extra/ivus_tf_export.json      what was exported (arch, tasks, class names, input size, outputs,
                                                package versions, source run, creation time, sizes, files)
    OUT/V/assets.extra/config.yaml              the training run's config, verbatim (when the run had one)

`assets.extra/` is TF Serving's place for files beside a SavedModel; the server ignores it. Every format writes a
complete version folder this way (ONNX and TensorRT files go beside the SavedModel, `export_onnx` /
`export_tensorrt`), so TF Serving can serve any version and `ivus_tf.export.load_exported` can pick an engine.
Versions are written to a hidden temporary folder and renamed at the end; an existing version is replaced only
with `overwrite=True`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ivus_tf.core.atomic import atomic_output_dir
from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.core.version import __version__
from ivus_tf.export.layout import CONFIG_COPY, EXTRA_DIR, INFO_FORMAT, INFO_NAME, INPUT_NAME, OUTPUT_SPECS, output_names
from ivus_tf.export.serving import ServingModule
from ivus_tf.export.source import ExportSource, load_source

tf = import_tensorflow()

PREPROCESSING = ("uint8 frames -> float32, tf.image.resize to the model size (bilinear, half-pixel centres, no "
                 "antialiasing), rounded to 0..255 (as the training pipeline caches them), / 255")
POSTPROCESSING = ("softmax probabilities resized back to the input H x W (bilinear, half-pixel centres), then "
                  "argmax per task (as ivus_tf.evaluation scores them)")


def folder_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [Path(root) / f for root, _, names in os.walk(path) for f in names]
    return sum(f.stat().st_size for f in files) / 1e6


def weights_mb(model) -> float:
    """Bytes of the model's weights (trainable and not), in MB: what a SavedModel must store at least."""
    return sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights) / 1e6


def check_version(out_dir: str | Path, version: int, overwrite: bool) -> Path:
    """`OUT/V` for a valid version number; `InputError` when it exists and `overwrite` is off."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"version must be an integer >= 1 (TF Serving's version folders), got {version!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    target = out_dir / str(version)
    if target.exists() and not overwrite:
        taken = [int(p.name) for p in out_dir.iterdir() if p.name.isdigit()]
        raise InputError(f"{target}: version {version} already exists; pass --overwrite to replace it "
                         f"or --version {max(taken) + 1} for a new version")
    return target


def build_info(src: ExportSource, version: int) -> dict:
    """The record written to `assets.extra/ivus_tf_export.json` (the exporters add `files`, `sizes_mb`, ...)."""
    import keras

    names = output_names(src.tasks)
    return {
        "format": INFO_FORMAT,
        "package_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": src.source,
        "version": version,
        "arch": src.arch,
        "tasks": list(src.tasks),
        "class_names": src.class_names,
        "model_input_size": list(src.image_size),
        "parameters": int(src.model.count_params()),
        "signature": "serving_default",
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": "[N, H, W] or [N, H, W, 1], any H x W"},
        "outputs": {name: dict(zip(("dtype", "shape", "description"), OUTPUT_SPECS[name])) for name in names},
        "preprocessing": PREPROCESSING,
        "postprocessing": POSTPROCESSING,
        "files": {"savedmodel": "."},
        "sizes_mb": {},
        "config": src.config,
    }


def write_savedmodel(src: ExportSource, folder: Path) -> ServingModule:
    """Write the SavedModel of `src` into the (existing, empty) `folder`; return the module it was made from."""
    module = ServingModule(src.model, src.image_size, src.tasks)
    tf.saved_model.save(module, str(folder), signatures=module.signatures())
    return module


def write_info(folder: Path, src: ExportSource, info: dict) -> None:
    extra = Path(folder) / EXTRA_DIR
    extra.mkdir(exist_ok=True)
    (extra / INFO_NAME).write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
    if src.config_text is not None:
        (extra / CONFIG_COPY).write_text(src.config_text, encoding="utf-8")


@contextmanager
def new_version(model_or_run_dir, out_dir, version: int, overwrite: bool) -> Iterator[tuple]:
    """Yield (source, temporary folder holding the SavedModel, module, info); the folder becomes `OUT/V` at the
    end, with the info (as completed by the caller) written into it."""
    target = check_version(out_dir, version, overwrite)
    src = load_source(model_or_run_dir)
    with atomic_output_dir(target, overwrite=overwrite) as tmp:
        module = write_savedmodel(src, tmp)
        info = build_info(src, version)
        info["sizes_mb"].update(weights=round(weights_mb(src.model), 3),
                                savedmodel=round(folder_mb(tmp / "saved_model.pb") + folder_mb(tmp / "variables"), 3))
        yield src, tmp, module, info
        write_info(tmp, src, info)


def export_savedmodel(model_or_run_dir, out_dir: str | Path, version: int = 1, overwrite: bool = False,
                      after=None) -> Path:
    """Export a run folder, `.keras` file or Keras model as the SavedModel `out_dir/version/`; return that path.
    `after(src, folder, info)` adds to the version folder before it is renamed (the reduced precisions)."""
    with new_version(model_or_run_dir, out_dir, version, overwrite) as (src, tmp, _, info):
        if after is not None:
            after(src, tmp, info)
    return Path(out_dir) / str(version)
