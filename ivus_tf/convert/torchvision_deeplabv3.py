"""torchvision's `deeplabv3_resnet50` as a Keras model, with its weights from a state dict, written as `.keras`.

`build_keras_deeplabv3(num_classes)` builds the network torchvision builds: ResNet50 "v1.5" with
`replace_stride_with_dilation=[False, True, True]` (output stride 8; layer3 dilation 2, layer4 dilation 4, each
stage's first block at the previous rate), batch norm epsilon 1e-5, `DeepLabHead` (ASPP rates 12/24/36 with image
pooling, 1x1 projection, dropout 0.5, 3x3 + BN + ReLU, 1x1 classifier), no auxiliary head, and the logits upsampled
bilinearly to the input size as `F.interpolate(mode="bilinear", align_corners=False)` does. It is the project's
DeepLabV3 (`ivus_tf.models.deeplabv3`, variant "torchvision") at the same layer names, so `build_model(...,
backbone_weights=FILE)` copies encoder and decoder by name. Input: NHWC float RGB, normalised as the weights
expect (torchvision: RGB in [0, 1], minus ImageNet mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225));
output: NHWC logits, float32. In inference mode (the default call) batch norm uses the running statistics and
dropout is off, as `model.eval()`.

`assign_state_dict` maps every Keras weight to its torchvision name (`torch_name`): a missing, unexpected or
misshapen entry is one `InputError` naming the key. `aux_classifier.*` (the FCN head torchvision trains with, in
its COCO checkpoint) and `num_batches_tracked` counters are not part of the network and are skipped.

`convert_torchvision_deeplabv3(checkpoint, out)` does it all: read (weights only, `ivus_tf.convert.checkpoint`),
build, assign, compare with torchvision's own model on a random input where torchvision is installed (refused
above `TOLERANCE`), write to a temporary name, load that back in Keras' safe mode and compare again, rename.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

from ivus_tf.convert.checkpoint import read_state_dict
from ivus_tf.core.atomic import atomic_file
from ivus_tf.core.errors import InputError
from ivus_tf.models import deeplabv3
from ivus_tf.models.layers import ResizeToMatch
from ivus_tf.models.pretrained import CONVERTED_DECODER_NAME, CONVERTED_ENCODER_NAME, TORCHVISION_MODEL_NAME

CLASSIFIER_KEY = "classifier.4.weight"
# NHWC, odd and non-square: 97 -> 25 at stride 4 (odd: Keras' "same" would pad as PyTorch), 111 -> 28 (even: it
# would not), and a non-integer ratio for the final upsampling.
CHECK_INPUT_SHAPE = (1, 97, 111, 3)
TOLERANCE = 1e-3  # max |Keras - torchvision| logit
SKIPPED = (re.compile(r"^aux_classifier\."), re.compile(r"\.num_batches_tracked$"))
_BLOCK = re.compile(r"^conv(\d)_block(\d+)_(\d)_(conv|bn)$")
# decoder layer (after "decoder_") -> torchvision module
_DECODER = {"aspp_1x1_conv": "classifier.0.convs.0.0", "aspp_1x1_bn": "classifier.0.convs.0.1",
            "aspp_pool_1x1_conv": "classifier.0.convs.4.1", "aspp_pool_1x1_bn": "classifier.0.convs.4.2",
            "aspp_project_conv": "classifier.0.project.0", "aspp_project_bn": "classifier.0.project.1",
            "conv3x3_conv": "classifier.1", "conv3x3_bn": "classifier.2"}
_DECODER.update({f"aspp_atrous{i}_{part}": f"classifier.0.convs.{i}.{j}"
                 for i in (1, 2, 3) for part, j in (("conv", 0), ("bn", 1))})
# Keras weight attribute -> torchvision parameter/buffer name
_CONV = (("kernel", "weight"), ("bias", "bias"))
_BN = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))


def build_keras_deeplabv3(num_classes: int = 21) -> keras.Model:
    """torchvision's deeplabv3_resnet50 (no aux head) in Keras: RGB [B, H, W, 3] -> logits [B, H, W, classes]."""
    image = keras.Input((None, None, 3), name="image")
    encoder_image = keras.Input((None, None, 3), name="encoder_image")
    encoder = keras.Model(encoder_image, deeplabv3.encoder(encoder_image, 1.0, variant="torchvision"),
                          name=CONVERTED_ENCODER_NAME)
    x = deeplabv3.decoder(encoder(image), 1.0, name=CONVERTED_DECODER_NAME, variant="torchvision")
    x = keras.layers.Conv2D(num_classes, 1, name="classifier")(x)
    logits = ResizeToMatch(name="logits")([x, image])
    return keras.Model(image, logits, name=TORCHVISION_MODEL_NAME)


def torch_module(layer_name: str) -> str:
    """The torchvision module holding a Keras layer's weights: "conv3_block1_2_conv" -> "backbone.layer2.0.conv2"."""
    if layer_name in ("conv1_conv", "conv1_bn"):
        return "backbone." + ("conv1" if layer_name.endswith("conv") else "bn1")
    block = _BLOCK.match(layer_name)
    if block:
        stage, index, part, kind = int(block[1]), int(block[2]), int(block[3]), block[4]
        module = (("downsample.0" if kind == "conv" else "downsample.1") if part == 0 else f"{kind}{part}")
        return f"backbone.layer{stage - 1}.{index - 1}.{module}"
    if layer_name == "classifier":
        return "classifier.4"
    prefix = CONVERTED_DECODER_NAME + "_"
    if layer_name.startswith(prefix) and layer_name[len(prefix):] in _DECODER:
        return _DECODER[layer_name[len(prefix):]]
    raise ValueError(f"no torchvision counterpart for Keras layer {layer_name!r}")


def _targets(model: keras.Model) -> dict:
    """{torchvision name: (Keras variable, is a conv kernel)} for every weight of the model."""
    layers = [*model.get_layer(CONVERTED_ENCODER_NAME).layers, *model.layers]
    targets = {}
    for layer in layers:
        if not layer.weights or isinstance(layer, keras.Model):
            continue
        pairs = _BN if isinstance(layer, keras.layers.BatchNormalization) else _CONV
        module = torch_module(layer.name)
        for attribute, suffix in pairs:
            variable = getattr(layer, attribute, None)
            if variable is not None:
                targets[f"{module}.{suffix}"] = (variable, attribute == "kernel")
    if len(targets) != len(model.weights):
        raise AssertionError(f"mapped {len(targets)} of {len(model.weights)} Keras weights")
    return targets


def assign_state_dict(model: keras.Model, state: dict[str, np.ndarray], source: str) -> int:
    """Set every weight of `model` from torchvision's `state`; return the number of tensors assigned."""
    targets = _targets(model)
    for name in state:
        if name not in targets and not any(pattern.search(name) for pattern in SKIPPED):
            raise InputError(f"{source}: unexpected key {name!r} (not in torchvision's deeplabv3_resnet50 without "
                             f"aux head)")
    for name, (variable, is_kernel) in targets.items():
        if name not in state:
            raise InputError(f"{source}: missing key {name!r} (torchvision's deeplabv3_resnet50 has it)")
        value = state[name]
        if is_kernel:
            value = np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value  # OIHW -> HWIO
        if tuple(value.shape) != tuple(variable.shape):
            expected = tuple(variable.shape)
            if is_kernel and len(expected) == 4:
                expected = (expected[3], expected[2], expected[0], expected[1])
            raise InputError(f"{source}: key {name!r} has shape {tuple(state[name].shape)}, expected {expected}")
        variable.assign(value.astype(np.float32))
    return len(targets)


def num_classes_of(state: dict[str, np.ndarray], source: str) -> int:
    if CLASSIFIER_KEY not in state:
        raise InputError(f"{source}: missing key {CLASSIFIER_KEY!r} (torchvision's deeplabv3_resnet50 has it)")
    shape = state[CLASSIFIER_KEY].shape
    if len(shape) != 4 or shape[1:] != (256, 1, 1):
        raise InputError(f"{source}: key {CLASSIFIER_KEY!r} has shape {tuple(shape)}, expected (classes, 256, 1, 1)")
    return int(shape[0])


def keras_from_state_dict(state: dict[str, np.ndarray], source: str) -> keras.Model:
    """The Keras model of a torchvision deeplabv3_resnet50 state dict (`source` names it in errors)."""
    model = build_keras_deeplabv3(num_classes_of(state, source))
    assign_state_dict(model, state, source)
    return model


def _skipped(state: dict) -> int:
    return sum(any(pattern.search(name) for pattern in SKIPPED) for name in state)


def convert_torchvision_deeplabv3(checkpoint, out, overwrite: bool = False, check: bool = True) -> dict:
    """Convert the checkpoint at `checkpoint` into the .keras file `out`; return what was done and checked."""
    from ivus_tf.convert import reference

    out = Path(out)
    if out.suffix != ".keras":
        raise InputError(f"--out {out}: the file name must end in .keras")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: no such folder {out.parent}")
    if out.exists() and not overwrite:
        raise InputError(f"--out {out}: exists (--overwrite replaces it)")
    state = read_state_dict(checkpoint)
    model = keras_from_state_dict(state, str(checkpoint))
    info = {"checkpoint": str(checkpoint), "out": str(out), "num_classes": int(model.output_shape[-1]),
            "parameters": sum(int(np.prod(w.shape)) for w in model.trainable_weights),  # as torch counts them
            "tensors": len(state) - _skipped(state), "skipped": _skipped(state),
            "check_input_shape": list(CHECK_INPUT_SHAPE)}
    x = np.random.default_rng(0).normal(size=CHECK_INPUT_SHAPE).astype(np.float32)
    if check:
        try:
            info["torchvision_version"] = reference.import_torchvision().__version__
            info["max_abs_logit_difference"] = reference.max_logit_difference(model, state, x)
        except ImportError as error:
            info["torchvision_check"] = f"not run: {error}"
        if info.get("max_abs_logit_difference", 0.0) > TOLERANCE:
            raise InputError(f"{checkpoint}: the Keras model's logits differ from torchvision's by up to "
                             f"{info['max_abs_logit_difference']:.3g} (limit {TOLERANCE:g}); nothing written")
    with atomic_file(out) as tmp:
        model.save(tmp)
        reloaded = keras.saving.load_model(tmp, compile=False, safe_mode=True)
        info["reload_max_abs_difference"] = float(np.max(np.abs(reference.keras_logits(reloaded, x)
                                                                - reference.keras_logits(model, x))))
        if info["reload_max_abs_difference"] > 1e-6:
            raise InputError(f"{out}: the written file does not give the converted model's logits back "
                             f"(max difference {info['reload_max_abs_difference']:.3g}); nothing written")
    info["size_mb"] = out.stat().st_size / 1e6
    return info
