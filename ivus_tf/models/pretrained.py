"""Natural-image weights for DeepLabV3 (`build_model("deeplabv3", ..., backbone_weights=PATH)`): what kind of file
PATH is, and copying its weights into the model by layer name. Nothing is downloaded.

Two kinds, told apart by the file itself (`load_pretrained`):

* "torchvision": a `.keras` file written by `python -m ivus_tf.convert torchvision-deeplabv3` (torchvision's
  `deeplabv3_resnet50`, e.g. its COCO checkpoint; the Keras model is named `TORCHVISION_MODEL_NAME`). The model is
  then built as torchvision builds it (`deeplabv3.VARIANTS`) and the encoder, the ASPP, its projection and the 3x3
  convolution after it all start from the file; only the 21-class classifier is left behind.
* "keras": the weights of `keras.applications.ResNet50(include_top=False)` (ImageNet): Keras' `.weights.h5` or
  `.keras`, or the legacy `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`. The encoder starts from it.

A file is loaded once per process (the last two are kept: a grid builds many models from the same files).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import keras

from ivus_tf.core.errors import InputError
from ivus_tf.models import layers as _layers  # noqa: F401  (registers the custom layers a converted file holds)

TORCHVISION_MODEL_NAME = "torchvision_deeplabv3_resnet50"
CONVERTED_ENCODER_NAME = "encoder"
CONVERTED_DECODER_NAME = "decoder"


def _existing(path) -> Path:
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise InputError(f"backbone_weights {path}: no such file")
    return path.resolve()


def load_pretrained(path) -> tuple[str, keras.Model]:
    """(kind, model) of a weights file: ("torchvision", the converted DeepLabV3) or ("keras", a ResNet50)."""
    path = _existing(path)
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load(path: str, _mtime_ns: int, _size: int) -> tuple[str, keras.Model]:
    if path.endswith(".keras"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception:  # noqa: BLE001 - not a whole model: maybe ResNet50 weights, load_resnet50 says
            model = None
        if model is not None and model.name == TORCHVISION_MODEL_NAME:
            return "torchvision", model
    return "keras", load_resnet50(path)


def pretrained_kind(path) -> str:
    """"torchvision" or "keras" (module docstring), or `InputError` when the file is neither."""
    return load_pretrained(path)[0]


def load_resnet50(path) -> keras.Model:
    """keras.applications.ResNet50(include_top=False) with the weights of a local file (nothing is downloaded).

    Accepts what Keras loads into that model: `.weights.h5` (`model.save_weights`), `.keras`, or the legacy
    `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`. A missing file, or one whose layers do not match, is an
    InputError naming the file (and, from Keras' message, the first layer that did not match).
    """
    path = _existing(path)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    try:
        with warnings.catch_warnings():  # Keras warns per unmatched layer before raising; the error says it all
            warnings.simplefilter("ignore")
            reference.load_weights(str(path))
    except (ValueError, OSError, KeyError, TypeError) as error:
        detail = " ".join(str(error).split("List of objects")[0].split())
        raise InputError(f"backbone_weights {path}: not the weights of keras.applications.ResNet50(include_top="
                         f"False) in a .weights.h5, .keras or legacy .h5 file, nor a torchvision DeepLabV3 "
                         f"conversion (python -m ivus_tf.convert): {detail[:400]}") from error
    return reference


def copy_weights_by_name(source_layers, target_layers, rename=lambda name: name, what: str = "ResNet50") -> int:
    """Assign every weight of `source_layers` to the target layer named `rename(source name)`; return layers
    copied. A source layer without a target of the same weight shapes is an `InputError`.

    Kernel shapes do not depend on dilation, so ResNet50's weights fit the dilated stages as they are.
    """
    targets = {layer.name: layer for layer in target_layers}
    copied = 0
    for layer in source_layers:
        if not layer.weights:
            continue
        target = targets.get(rename(layer.name))
        if target is None or [tuple(w.shape) for w in target.weights] != [tuple(w.shape) for w in layer.weights]:
            raise InputError(f"{what} layer {layer.name!r} has no counterpart of the same shape in the model")
        for dst, src in zip(target.weights, layer.weights):
            dst.assign(src)
        copied += 1
    return copied


def torchvision_encoder_layers(model: keras.Model) -> list:
    """The layers of a converted model's ResNet50 (nested model `CONVERTED_ENCODER_NAME`)."""
    return model.get_layer(CONVERTED_ENCODER_NAME).layers


def torchvision_decoder_layers(model: keras.Model) -> list:
    """The layers of a converted model's ASPP, projection and 3x3 convolution (`decoder_*`), classifier excluded."""
    return [layer for layer in model.layers if layer.name.startswith(CONVERTED_DECODER_NAME + "_")]
