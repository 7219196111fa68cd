"""DeepLabV3 with a dilated ResNet50 backbone at output stride 8 (Chen et al. 2017, "Rethinking Atrous Convolution
for Semantic Image Segmentation"), the "DeepLabV3" of Bargsten et al. 2021.

Encoder: ResNet50 (bottleneck blocks 3-4-6-3) with the layer names, block structure and strides of
`keras.applications.ResNet50` (stride on the first 1x1 convolution of a stage; biased convolutions; batch norm
epsilon 1.001e-5), except that stages 4 and 5 ("conv4", "conv5") keep stride 1 and dilate their 3x3 convolutions
instead, as torchvision's `replace_stride_with_dilation` does: the first block of a dilated stage keeps the
previous rate, later blocks use 2 (conv4) and 4 (conv5). Three downsamplings remain (conv1, pool1, conv3), so a
256x256 frame gives 32x32 features. Features: "stride_2" (conv1_relu), "stride_4" (conv2_block3_out), "stride_8"
(conv5_block3_out, 2048 * width channels).

Decoder (torchvision's `DeepLabHead`): atrous spatial pyramid pooling - a 1x1 branch, one 3x3 branch per rate in
`aspp_rates` and an image-pooling branch (global average -> 1x1 -> broadcast), each 256 channels with batch norm
and ReLU - concatenated, projected by 1x1 + BN + ReLU, dropout `aspp_dropout`, then 3x3 + BN + ReLU. `build.py`
adds the 1x1 logits and the bilinear x8 upsampling. At width 1.0: 23.6 M (backbone) + 16.1 M (decoder) = 39.7 M
parameters.

ASPP rates (`aspp_rates`, default `DEFAULT_ASPP_RATES` = 6/12/18). DeepLabV3 uses 6/12/18 at output stride 16
and doubles them to 12/24/36 at stride 8, for 513x513 crops: 65x65 features. Our frames are 256x256, so stride-8
features are 32x32, and the rates must shrink with the map to keep their meaning. Measured as the share of 3x3
taps that land inside the feature map (the rest multiply zero padding):

    rates 12/24/36 on 65x65 (DeepLabV3's setting): 77% / 57% / 40%
    rates  6/12/18 on 32x32 (our default):        77% / 56% / 39%
    rates 12/24/36 on 32x32:                      56% / 25% / 11%

At 32x32, rate 36 puts every off-centre tap outside the map for every output position, so that "atrous" branch
is a second 1x1 branch, and rate 24 is three quarters padding; 6/12/18 reproduces the paper's geometry. Time does
not argue otherwise: with `AtrousConv2D` a train step costs the same at either set (2.55 s at 6/12/18, 2.65 s at
12/24/36; PyTorch 2.13 3.36 s / 3.94 s), while plain `keras.layers.Conv2D` would have made 12/24/36 cost 7.13 s
against 4.16 s (one-task model, batch 2, 256x256, fp32, 2-core AMD EPYC, bench/bench_deeplab_train_step.py,
2026-11-27). Which set segments calcium best is an experiment for the training grid; `aspp_rates` is its knob.

With `backbone_weights=PATH` (width 1.0 only) the encoder starts with `NaturalImageAdapter` (gray [0, 1] -> 3
channels, caffe-style BGR mean subtraction of `keras.applications.resnet50.preprocess_input`) and loads the
weights of a `keras.applications.ResNet50(include_top=False)` from a local file: Keras' `.weights.h5` or `.keras`,
or the legacy `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`. Nothing is downloaded. Without it, conv1
takes the one gray channel directly.

All dilated convolutions are `AtrousConv2D` (TensorFlow's native dilated kernel on the TF backend; see
`ivus_tf.models.layers`). Batch norms use momentum 0.9 (PyTorch's 0.1), since IVUS training sets are a few hundred
frames and Keras' default 0.99 lets the moving statistics lag behind many epochs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras

from ivus_tf.core.errors import InputError
from ivus_tf.models.layers import AtrousConv2D, NaturalImageAdapter, SpatialBroadcast

DECODER_STRIDE = 8
OPTIONS = ("aspp_rates", "aspp_dropout", "backbone_weights")

DEFAULT_ASPP_RATES = (6, 12, 18)  # the paper's 12/24/36 scaled to 32x32 features: see the module docstring
DEFAULT_ASPP_DROPOUT = 0.5
ASPP_CHANNELS = 256
# (stage name, bottleneck filters, blocks, stride, dilation of blocks 2.., dilation of block 1)
STAGES = (("conv2", 64, 3, 1, 1, 1), ("conv3", 128, 4, 2, 1, 1), ("conv4", 256, 6, 1, 2, 1),
          ("conv5", 512, 3, 1, 4, 2))
BACKBONE_BN_EPSILON = 1.001e-5  # keras.applications' value (the ImageNet weights were trained with it)
BN_MOMENTUM = 0.9


def channels(count: int, width: float) -> int:
    return max(4, int(round(count * width)))


def _conv(filters, kernel_size, name, strides=1, dilation=1, use_bias=True):
    if dilation > 1:
        return AtrousConv2D(filters, kernel_size, padding="same", dilation_rate=dilation, use_bias=use_bias,
                            name=name)
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same" if kernel_size > 1 else "valid",
                               use_bias=use_bias, name=name)


def _bn(name, epsilon=BACKBONE_BN_EPSILON):
    return keras.layers.BatchNormalization(epsilon=epsilon, momentum=BN_MOMENTUM, name=name)


def apply_bottleneck_block(x, filters, name, stride=1, dilation=1, conv_shortcut=False):
    """keras.applications' `residual_block_v1` with a dilated 3x3: 1x1 (stride) -> 3x3 (dilation) -> 1x1 (x4)."""
    shortcut = x
    if conv_shortcut:
        shortcut = _conv(4 * filters, 1, f"{name}_0_conv", strides=stride)(x)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    x = _conv(filters, 1, f"{name}_1_conv", strides=stride)(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(_bn(f"{name}_1_bn")(x))
    x = _conv(filters, 3, f"{name}_2_conv", dilation=dilation)(x)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(_bn(f"{name}_2_bn")(x))
    x = _bn(f"{name}_3_bn")(_conv(4 * filters, 1, f"{name}_3_conv")(x))
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def apply_stage(x, name, filters, blocks, stride, dilation, first_dilation):
    x = apply_bottleneck_block(x, filters, f"{name}_block1", stride, first_dilation, conv_shortcut=True)
    for i in range(2, blocks + 1):
        x = apply_bottleneck_block(x, filters, f"{name}_block{i}", dilation=dilation)
    return x


def encoder(inputs, width, backbone_weights=None, **_decoder_options) -> dict:
    """Dilated ResNet50: inputs [B, H, W, 1] in [0, 1] -> {"stride_2", "stride_4", "stride_8"} features.

    Options other than `backbone_weights` belong to the decoder and are ignored here (build.py passes all of them
    to both).
    """
    x = inputs
    if backbone_weights is not None:
        if width != 1.0:
            raise InputError(f"backbone_weights needs width 1.0 (the ResNet50 the weights belong to), got {width}")
        if inputs.shape[-1] != 1:
            raise InputError(f"backbone_weights expects 1-channel gray frames, got input shape {inputs.shape}")
        reference = load_resnet50(backbone_weights)
        x = NaturalImageAdapter(name="input_adapter")(x)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(channels(64, width), 7, strides=2, name="conv1_conv")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(_bn("conv1_bn")(x))
    features = {"stride_2": x}
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for name, filters, blocks, stride, dilation, first_dilation in STAGES:
        x = apply_stage(x, name, channels(filters, width), blocks, stride, dilation, first_dilation)
        if name == "conv2":
            features["stride_4"] = x
    features["stride_8"] = x
    if backbone_weights is not None:
        copy_weights_by_name(reference, keras.Model(inputs, x, name="backbone").layers)
    return features


def load_resnet50(path) -> keras.Model:
    """keras.applications.ResNet50(include_top=False) with the weights of a local file (nothing is downloaded).

    Accepts what Keras loads into that model: `.weights.h5` (`model.save_weights`), `.keras`, or the legacy
    `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`. A missing file, or one whose layers do not match, is an
    InputError naming the file (and, from Keras' message, the first layer that did not match).
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise InputError(f"backbone_weights {path}: no such file")
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    try:
        with warnings.catch_warnings():  # Keras warns per unmatched layer before raising; the error says it all
            warnings.simplefilter("ignore")
            reference.load_weights(str(path))
    except (ValueError, OSError, KeyError, TypeError) as error:
        detail = " ".join(str(error).split("List of objects")[0].split())
        raise InputError(f"backbone_weights {path}: not the weights of keras.applications.ResNet50(include_top="
                         f"False) in a .weights.h5, .keras or legacy .h5 file: {detail[:400]}") from error
    return reference


def copy_weights_by_name(source: keras.Model, layers) -> int:
    """Assign every weight of `source`'s layers to the layer of the same name in `layers`; return layers copied.

    Kernel shapes do not depend on dilation, so ResNet50's weights fit the dilated stages as they are.
    """
    layers = {layer.name: layer for layer in layers}
    copied = 0
    for layer in source.layers:
        if not layer.weights:
            continue
        target = layers.get(layer.name)
        if target is None or [tuple(w.shape) for w in target.weights] != [tuple(w.shape) for w in layer.weights]:
            raise InputError(f"ResNet50 layer {layer.name!r} has no counterpart of the same shape in the encoder")
        for dst, src in zip(target.weights, layer.weights):
            dst.assign(src)
        copied += 1
    return copied


def check_aspp_options(aspp_rates, aspp_dropout) -> tuple[int, ...]:
    try:
        rates = tuple(int(r) for r in aspp_rates)
    except (TypeError, ValueError):
        rates = ()
    if not rates or any(r < 1 for r in rates) or any(int(r) != r for r in aspp_rates):
        raise InputError(f"aspp_rates must be positive integers, e.g. {list(DEFAULT_ASPP_RATES)}; got {aspp_rates!r}")
    if not 0 <= aspp_dropout < 1:
        raise InputError(f"aspp_dropout must be in [0, 1), got {aspp_dropout!r}")
    return rates


def _conv_bn_relu(x, filters, kernel_size, name, dilation=1):
    x = _conv(filters, kernel_size, f"{name}_conv", dilation=dilation, use_bias=False)(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def decoder(features, width, name, aspp_rates=DEFAULT_ASPP_RATES, aspp_dropout=DEFAULT_ASPP_DROPOUT,
            **_encoder_options):
    """ASPP (1x1, one 3x3 per rate, image pooling) -> concat -> 1x1 projection -> dropout -> 3x3, at stride 8."""
    rates = check_aspp_options(aspp_rates, aspp_dropout)
    x = features["stride_8"]
    filters = channels(ASPP_CHANNELS, width)
    branches = [_conv_bn_relu(x, filters, 1, f"{name}_aspp_1x1")]
    for i, rate in enumerate(rates, start=1):
        branches.append(_conv_bn_relu(x, filters, 3, f"{name}_aspp_atrous{i}", dilation=rate))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_aspp_pool")(x)
    pooled = _conv_bn_relu(pooled, filters, 1, f"{name}_aspp_pool_1x1")
    branches.append(SpatialBroadcast(name=f"{name}_aspp_pool_broadcast")([pooled, x]))
    x = keras.layers.Concatenate(name=f"{name}_aspp_concat")(branches)
    x = _conv_bn_relu(x, filters, 1, f"{name}_aspp_project")
    if aspp_dropout > 0:
        x = keras.layers.Dropout(aspp_dropout, name=f"{name}_aspp_dropout")(x)
    return _conv_bn_relu(x, filters, 3, f"{name}_conv3x3")
