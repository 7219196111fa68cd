"""`build_model`: a shared encoder, a decoder, and one head per task, as one Keras functional model.

The encoder is a nested model named "encoder" (dict of features keyed "stride_<s>"), so the pre-training scheme
can move exactly its weights (`transfer_encoder_weights`) and backbone weights load by layer name. Heads: "linear"
(default, a 1x1 convolution per task), "conv", or "decoder" (a decoder per task). Outputs are softmax
probabilities named after the tasks. Architectures are a dict (`ARCHITECTURES`), no import side effects; each
module provides `encoder`, `decoder`, `DECODER_STRIDE` and `OPTIONS`. Details: docs/models.md.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import keras

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import HEADS, NUM_CLASSES, TASKS, check_tasks
from ivus_tf.models import deeplabv3, unet_res

ARCHITECTURES = {"deeplabv3": deeplabv3, "unet_res": unet_res}  # keys: ivus_tf.core.vocab.ARCHS (tested)
ENCODER_NAME = "encoder"


def _check(arch: str, tasks: Sequence[str], head: str, width: float, options: dict) -> None:
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    check_tasks(tasks)
    if head not in HEADS:
        raise InputError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    if not width > 0:
        raise InputError(f"width must be > 0, got {width}")
    unknown = sorted(set(options) - set(ARCHITECTURES[arch].OPTIONS))
    if unknown:
        raise InputError(f"{arch}: unknown option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(ARCHITECTURES[arch].OPTIONS) or 'none'}")


def _head(x, task: str, width: float, head: str, upsample: int):
    name = f"{task}_head"
    if head == "conv":
        channels = max(8, int(round(64 * width)))
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.Conv2D(NUM_CLASSES[task], 1, name=f"{name}_logits")(x)
    if upsample > 1:
        x = keras.layers.UpSampling2D(upsample, interpolation="bilinear", name=f"{name}_upsample")(x)
    return keras.layers.Activation("softmax", dtype="float32", name=task)(x)


def build_model(arch: str, tasks: Sequence[str] = TASKS, input_shape=(256, 256, 1),
                width: float = 1.0, head: str = "linear", name: str | None = None, **options) -> keras.Model:
    """Build a segmentation model whose outputs are a dict {task: softmax probabilities [B, H, W, classes]}.

    `width` scales every channel count (1.0: the paper's ~40 M parameters; tests use ~0.05-0.125).
    `options` go to the architecture (`ARCHITECTURES[arch].OPTIONS`, e.g. DeepLabV3's `aspp_rates`,
    `backbone_weights`).
    """
    tasks = tuple(tasks)
    _check(arch, tasks, head, width, options)
    module = ARCHITECTURES[arch]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    encoder_inputs = keras.Input(shape=tuple(input_shape), name="encoder_image")
    encoder = keras.Model(encoder_inputs, module.encoder(encoder_inputs, width, **options), name=ENCODER_NAME)
    features = encoder(inputs)
    if head == "decoder":
        decoded = {task: module.decoder(features, width, name=f"{task}_decoder", **options) for task in tasks}
    else:
        shared = module.decoder(features, width, name="decoder", **options)
        decoded = {task: shared for task in tasks}
    outputs = {task: _head(decoded[task], task, width, head, module.DECODER_STRIDE) for task in tasks}
    return keras.Model(inputs, outputs, name=name or f"{arch}_{'_'.join(tasks)}")


def iter_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, descending into nested models (the encoder), the nested models themselves left out."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def transfer_encoder_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy every encoder weight from `source` to `target` (same architecture and width); return the count.

    Used by the pre-training scheme: wall-lumen model -> calcium model. Decoder and heads are left untouched.
    """
    src, dst = source.get_layer(ENCODER_NAME), target.get_layer(ENCODER_NAME)
    src_weights, dst_weights = src.weights, dst.weights
    if [tuple(w.shape) for w in src_weights] != [tuple(w.shape) for w in dst_weights]:
        raise InputError("encoder weights differ in shape: the models were built with different arch/width/options")
    for s, d in zip(src_weights, dst_weights):
        d.assign(s)
    return len(src_weights)
