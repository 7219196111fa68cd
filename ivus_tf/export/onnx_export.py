"""`export_onnx`: the SavedModel version folder plus `model.onnx`, the same serving graph for ONNX Runtime.

The rank-3 serving function (`ServingModule.serve_nhw`: uint8 `frames` [N, H, W], resizing, model, resizing back,
argmax) is converted by tf2onnx (`tf2onnx.convert.from_function`, what Keras' own ONNX export calls) with N, H and
W dynamic: tf2onnx maps `ResizeBilinear` with half-pixel centres to ONNX `Resize` (linear, half_pixel), so the
graph takes frames of any size like the SavedModel. Inputs and outputs keep their names. ONNX needs a fixed rank,
so the ONNX model takes [N, H, W] only (`load_exported` squeezes a trailing channel of 1).

After conversion, ONNX Runtime and TensorFlow run the same random frames (a size unlike the model's, so both
resizes are exercised) and the largest probability difference is recorded in `ivus_tf_export.json`; a conversion
that disagrees beyond `MAX_PROBABILITY_DIFFERENCE` fails the export. Small differences are expected: the resize
kernels round differently, and the preprocessing's rounding to 0..255 can move a pixel by one grey level.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from ivus_tf import compat
from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.export.layout import INPUT_NAME, ONNX_NAME
from ivus_tf.export.loader import INSTALL_HINT, onnx_session
from ivus_tf.export.savedmodel import folder_mb, new_version
from ivus_tf.export.serving import ServingModule

tf = import_tensorflow()

DEFAULT_OPSET = 17
MAX_PROBABILITY_DIFFERENCE = 0.05


def _import_tf2onnx():
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as error:
        raise InputError(f"ONNX export needs tf2onnx and onnx ({error.name} is missing): {INSTALL_HINT}") from error
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():  # tf2onnx 1.17 still uses numpy aliases removed in numpy 2
        warnings.simplefilter("ignore", FutureWarning)
        try:  # the patch Keras' own ONNX export applies
            compat.patch_tf2onnx()
        except ImportError:
            if not hasattr(np, "object"):
                np.object = object
    return tf2onnx


def _name_dynamic_dims(model_proto) -> None:
    """Name the dynamic axes N, H, W (tf2onnx calls them unk__123) so tools and TensorRT profiles read well."""
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, ("N", "H", "W")):
            if not dim.HasField("dim_value"):
                dim.dim_param = name


def convert_to_onnx(module: ServingModule, path: Path, opset: int = DEFAULT_OPSET, metadata: dict | None = None):
    """Write the rank-3 serving graph of `module` to `path` as an ONNX model."""
    tf2onnx = _import_tf2onnx()
    import onnx

    spec = tf.TensorSpec([None, None, None], tf.uint8, name=INPUT_NAME)
    model_proto, _ = tf2onnx.convert.from_function(module.serve_nhw(), [spec], opset=opset)
    _name_dynamic_dims(model_proto)
    for key, value in (metadata or {}).items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(path))


def compare_with_tensorflow(module: ServingModule, path: Path, image_size, seed: int = 0) -> dict:
    """Largest and mean |ONNX Runtime - TensorFlow| of every probability output on random frames."""
    height, width = image_size
    frames = np.random.default_rng(seed).integers(0, 256, (2, height * 5 // 4 + 3, width * 3 // 4 + 1), np.uint8)
    reference = {k: v.numpy() for k, v in module.serve(tf.constant(frames)).items()}
    session = onnx_session(path)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: frames})))
    if sorted(got) != sorted(reference):
        raise RuntimeError(f"ONNX outputs {sorted(got)} differ from the SavedModel's {sorted(reference)}")
    differences = [np.abs(got[k] - reference[k]) for k in reference if k.endswith("_probability")]
    return {"frames_shape": list(frames.shape),
            "max_abs_probability_difference": float(max(d.max() for d in differences)),
            "mean_abs_probability_difference": float(np.mean([d.mean() for d in differences]))}


def add_onnx(src, folder: Path, module: ServingModule, info: dict, opset: int = DEFAULT_OPSET,
             verify: bool = True) -> None:
    """Write `folder/model.onnx` next to the SavedModel and record it in `info`."""
    metadata = {k: info[k] for k in ("tasks", "class_names", "model_input_size", "package_version", "arch")}
    convert_to_onnx(module, folder / ONNX_NAME, opset, metadata)
    info["files"]["onnx"] = ONNX_NAME
    info["sizes_mb"]["onnx"] = round(folder_mb(folder / ONNX_NAME), 3)
    info["onnx"] = {"opset": opset, "input_shape": "[N, H, W]"}
    if verify:
        check = compare_with_tensorflow(module, folder / ONNX_NAME, src.image_size)
        info["onnx"]["check_against_tensorflow"] = check
        if not check["max_abs_probability_difference"] <= MAX_PROBABILITY_DIFFERENCE:
            raise RuntimeError(f"the ONNX model disagrees with TensorFlow by up to "
                               f"{check['max_abs_probability_difference']:.3g} in probability: not exported")


def export_onnx(model_or_run_dir, out_dir: str | Path, version: int = 1, overwrite: bool = False,
                opset: int = DEFAULT_OPSET, verify: bool = True, after=None) -> Path:
    """Export the SavedModel `out_dir/version/` with `model.onnx` beside it (checked against TensorFlow);
    `after(src, folder, info)` adds to the folder before it is renamed (the reduced precisions)."""
    _import_tf2onnx()  # fail before any work when the converter is missing
    with new_version(model_or_run_dir, out_dir, version, overwrite) as (src, tmp, module, info):
        add_onnx(src, tmp, module, info, opset=opset, verify=verify)
        if after is not None:
            after(src, tmp, info)
    return Path(out_dir) / str(version)
