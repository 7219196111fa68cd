"""`build_model`: a shared encoder, a decoder, and one head per task, as one Keras functional model.

The encoder is a nested model named "encoder" (dict of features keyed "stride_<s>"), so backbone weights load by layer
name and pre-training can move exactly its weights (`transfer_encoder_weights`); by default it moves every weight
but each task's 1x1 classifier `<task>_head_logits` (`transfer_weights`, scope "all_but_classifier"). Heads: "linear"
(default, a 1x1 convolution per task), "conv", or "decoder" (a decoder per task). Outputs are softmax
probabilities named after the tasks. Architectures are a dict (`ARCHITECTURES`), no import side effects; each
module provides `encoder`, `decoder`, `DECODER_STRIDE` and `OPTIONS`. Details: docs/models.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import keras

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import HEADS, NUM_CLASSES, PRETRAIN_TRANSFERS, TASKS, check_tasks
from ivus_tf.models import deeplabv3, unet_res

ARCHITECTURES = {"deeplabv3": deeplabv3, "unet_res": unet_res}  # keys: ivus_tf.core.vocab.ARCHS (tested)
TRANSFER_SCOPES = PRETRAIN_TRANSFERS  # what pre-training copies (transfer_weights)
CLASSIFIER_SUFFIX = "_head_logits"
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


def _copy(pairs) -> int:
    pairs = list(pairs)
    if any(tuple(s.shape) != tuple(d.shape) for s, d in pairs):
        raise InputError("weights differ in shape: the models were built with different arch/width/options")
    for s, d in pairs:
        d.assign(s)
    return len(pairs)


def model_tasks(model: keras.Model) -> list[str]:
    """The tasks of a `build_model` model, from its classifier layers `<task>_head_logits`."""
    return [layer.name[:-len(CLASSIFIER_SUFFIX)] for layer in model.layers if layer.name.endswith(CLASSIFIER_SUFFIX)]


def _encoder_pairs(source: keras.Model, target: keras.Model) -> list:
    src, dst = source.get_layer(ENCODER_NAME), target.get_layer(ENCODER_NAME)
    if len(src.weights) != len(dst.weights):
        raise InputError("encoder weights differ in shape: the models were built with different arch/width/options")
    return list(zip(src.weights, dst.weights))


def transfer_encoder_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy every encoder weight from `source` to `target` (same architecture and width); return the count.
    Decoder and heads are left untouched (`transfer_weights(..., "encoder")`)."""
    return _copy(_encoder_pairs(source, target))


def transfer_weights(source: keras.Model, target: keras.Model, scope: str = "all_but_classifier") -> int:
    """Copy the weights `scope` names from `source` to `target` (same arch, width, head, options); return the count.

    Pre-training: wall-lumen model -> calcium model. "encoder": the encoder only. "all_but_classifier": every layer
    with weights (batch-norm statistics included) except the classifiers `<task>_head_logits`; a target layer
    `<task>_...` of a task the source lacks takes the source task's `<source task>_...` (its own up-path with
    head="decoder", its conv head layers with head="conv"), so the source must then have exactly one task.
    """
    if scope not in TRANSFER_SCOPES:
        raise InputError(f"unknown transfer scope {scope!r}; valid: {', '.join(TRANSFER_SCOPES)}")
    pairs = _encoder_pairs(source, target)
    if scope == "encoder":
        return _copy(pairs)
    source_tasks, target_tasks = model_tasks(source), model_tasks(target)
    renamed = [task for task in target_tasks if task not in source_tasks]

    def source_name(name: str) -> str:
        for task in renamed:
            if name.startswith(f"{task}_"):
                if len(source_tasks) != 1:
                    raise InputError(f"layer {name}: no single source task to take it from (source tasks: "
                                     f"{', '.join(source_tasks)})")
                return source_tasks[0] + name[len(task):]
        return name

    source_layers = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if layer.name == ENCODER_NAME or not layer.weights or layer.name.endswith(CLASSIFIER_SUFFIX):
            continue
        match = source_layers.get(source_name(layer.name))
        if match is None or len(match.weights) != len(layer.weights):
            raise InputError(f"layer {layer.name}: no matching layer {source_name(layer.name)} in the source model "
                             "(the models were built with different arch/head/options)")
        pairs += zip(match.weights, layer.weights)
    return _copy(pairs)  # every shape checked before the first weight is written
