"""DeepLabV3 with a dilated ResNet50 backbone at output stride 8 (Chen et al. 2017), the "DeepLabV3" of Bargsten et
al. 2021.

Encoder: `keras.applications.ResNet50`'s layers and names, with stages conv4 and conv5 dilated instead of strided
(torchvision's `replace_stride_with_dilation`); features "stride_2", "stride_4", "stride_8". Decoder: torchvision's
`DeepLabHead` (ASPP with rates `aspp_rates`, default 6/12/18: the paper's 12/24/36 scaled to 32x32 features).
Two variants at the same layer names (`variant`): "keras" (default) and "torchvision" (ResNet "v1.5" as torchvision
builds it, ASPP 12/24/36), which `backbone_weights` from a converted torchvision COCO file selects; natural-image
weights always come from a local file (`ivus_tf.models.pretrained`), never downloaded. Dilated convolutions are
`AtrousConv2D`; batch norms use momentum 0.9. Design reasons and the rate arithmetic: docs/models.md.
"""

from __future__ import annotations

import keras

from ivus_tf.core.errors import InputError
from ivus_tf.models import pretrained
from ivus_tf.models.layers import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    AtrousConv2D,
    NaturalImageAdapter,
    SpatialBroadcast,
)

DECODER_STRIDE = 8
OPTIONS = ("aspp_rates", "aspp_dropout", "backbone_weights", "variant")
VARIANTS = ("keras", "torchvision")

DEFAULT_ASPP_RATES = (6, 12, 18)  # the paper's 12/24/36 scaled to 32x32 features: docs/models.md
TORCHVISION_ASPP_RATES = (12, 24, 36)  # torchvision's DeepLabHead (its COCO weights were trained with them)
DEFAULT_ASPP_DROPOUT = 0.5
ASPP_CHANNELS = 256
# (stage name, bottleneck filters, blocks, stride, dilation of blocks 2.., dilation of block 1)
STAGES = (("conv2", 64, 3, 1, 1, 1), ("conv3", 128, 4, 2, 1, 1), ("conv4", 256, 6, 1, 2, 1),
          ("conv5", 512, 3, 1, 4, 2))
BACKBONE_BN_EPSILON = {"keras": 1.001e-5, "torchvision": 1e-5}  # what each family's weights were trained with
BN_MOMENTUM = 0.9


def channels(count: int, width: float) -> int:
    return max(4, int(round(count * width)))


def _conv(filters, kernel_size, name, strides=1, dilation=1, use_bias=True):
    if dilation > 1:
        return AtrousConv2D(filters, kernel_size, padding="same", dilation_rate=dilation, use_bias=use_bias,
                            name=name)
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same" if kernel_size > 1 else "valid",
                               use_bias=use_bias, name=name)


def _bn(name, variant="keras"):
    return keras.layers.BatchNormalization(epsilon=BACKBONE_BN_EPSILON[variant], momentum=BN_MOMENTUM, name=name)


def apply_bottleneck_block(x, filters, name, stride=1, dilation=1, conv_shortcut=False, variant="keras"):
    """1x1 -> 3x3 (dilation) -> 1x1 (x4) plus the shortcut, stride on the first 1x1 ("keras": keras.applications'
    `residual_block_v1`) or on the 3x3 ("torchvision": its `Bottleneck`, padded 1 on every side as PyTorch pads;
    Keras' "same" would pad only bottom/right on even sizes)."""
    bias = variant == "keras"
    stride_1x1, stride_3x3 = (stride, 1) if variant == "keras" else (1, stride)
    shortcut = x
    if conv_shortcut:
        shortcut = _conv(4 * filters, 1, f"{name}_0_conv", strides=stride, use_bias=bias)(x)
        shortcut = _bn(f"{name}_0_bn", variant)(shortcut)
    x = _conv(filters, 1, f"{name}_1_conv", strides=stride_1x1, use_bias=bias)(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(_bn(f"{name}_1_bn", variant)(x))
    if stride_3x3 > 1:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_2_pad")(x)
        x = keras.layers.Conv2D(filters, 3, strides=stride_3x3, use_bias=bias, name=f"{name}_2_conv")(x)
    else:
        x = _conv(filters, 3, f"{name}_2_conv", dilation=dilation, use_bias=bias)(x)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(_bn(f"{name}_2_bn", variant)(x))
    x = _bn(f"{name}_3_bn", variant)(_conv(4 * filters, 1, f"{name}_3_conv", use_bias=bias)(x))
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def apply_stage(x, name, filters, blocks, stride, dilation, first_dilation, variant="keras"):
    x = apply_bottleneck_block(x, filters, f"{name}_block1", stride, first_dilation, conv_shortcut=True,
                               variant=variant)
    for i in range(2, blocks + 1):
        x = apply_bottleneck_block(x, filters, f"{name}_block{i}", dilation=dilation, variant=variant)
    return x


def resolve_variant(backbone_weights=None, variant=None) -> str:
    """The variant to build: the one `backbone_weights` needs (a torchvision conversion: "torchvision"; a Keras
    ResNet50: "keras"), else `variant`, else "keras". A stated variant the weights do not fit is an InputError."""
    if variant is not None and variant not in VARIANTS:
        raise InputError(f"deeplabv3 variant {variant!r} is unknown; valid: {', '.join(VARIANTS)}")
    if backbone_weights is None:
        return variant or "keras"
    needed = pretrained.pretrained_kind(backbone_weights)
    if variant is not None and variant != needed:
        raise InputError(f"backbone_weights {backbone_weights}: weights of the {needed!r} variant, but variant "
                         f"{variant!r} was asked for")
    return needed


def encoder(inputs, width, backbone_weights=None, variant=None, **_decoder_options) -> dict:
    """Dilated ResNet50: inputs [B, H, W, C] (C = 1: gray in [0, 1]) -> {"stride_2", "stride_4", "stride_8"}.

    Options other than `backbone_weights` and `variant` belong to the decoder and are ignored here (build.py
    passes all of them to both).
    """
    if backbone_weights is not None:
        if width != 1.0:
            raise InputError(f"backbone_weights needs width 1.0 (the ResNet50 the weights belong to), got {width}")
        if inputs.shape[-1] != 1:
            raise InputError(f"backbone_weights expects 1-channel gray frames, got input shape {inputs.shape}")
    variant = resolve_variant(backbone_weights, variant)
    bias = variant == "keras"
    x = inputs
    if backbone_weights is not None:
        kind, reference = pretrained.load_pretrained(backbone_weights)
        adapter = ({} if kind == "keras" else {"scale": 1.0, "mean": IMAGENET_MEAN_RGB, "std": IMAGENET_STD_RGB})
        x = NaturalImageAdapter(name="input_adapter", **adapter)(x)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = keras.layers.Conv2D(channels(64, width), 7, strides=2, use_bias=bias, name="conv1_conv")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(_bn("conv1_bn", variant)(x))
    features = {"stride_2": x}
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)  # zeros = PyTorch's -inf padding here: x >= 0 (ReLU)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for name, filters, blocks, stride, dilation, first_dilation in STAGES:
        x = apply_stage(x, name, channels(filters, width), blocks, stride, dilation, first_dilation, variant)
        if name == "conv2":
            features["stride_4"] = x
    features["stride_8"] = x
    if backbone_weights is not None:
        source = reference.layers if kind == "keras" else pretrained.torchvision_encoder_layers(reference)
        pretrained.copy_weights_by_name(source, keras.Model(inputs, x, name="backbone").layers,
                                        what="ResNet50" if kind == "keras" else "converted encoder")
    return features


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


def decoder(features, width, name, aspp_rates=None, aspp_dropout=DEFAULT_ASPP_DROPOUT, backbone_weights=None,
            variant=None):
    """ASPP (1x1, one 3x3 per rate, image pooling) -> concat -> 1x1 projection -> dropout -> 3x3, at stride 8.

    `aspp_rates` None: 6/12/18, or 12/24/36 for the torchvision variant. With a torchvision conversion as
    `backbone_weights`, every layer here starts from the file's (its "decoder_*" layers, renamed to `name`).
    """
    variant = resolve_variant(backbone_weights, variant)
    if aspp_rates is None:
        aspp_rates = TORCHVISION_ASPP_RATES if variant == "torchvision" else DEFAULT_ASPP_RATES
    rates = check_aspp_options(aspp_rates, aspp_dropout)
    x = features["stride_8"]
    filters = channels(ASPP_CHANNELS, width)
    branches = [_conv_bn_relu(x, filters, 1, f"{name}_aspp_1x1")]
    for i, rate in enumerate(rates, start=1):
        branches.append(_conv_bn_relu(x, filters, 3, f"{name}_aspp_atrous{i}", dilation=rate))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_aspp_pool")(x)
    pooled = _conv_bn_relu(pooled, filters, 1, f"{name}_aspp_pool_1x1")
    branches.append(SpatialBroadcast(name=f"{name}_aspp_pool_broadcast")([pooled, x]))
    y = keras.layers.Concatenate(name=f"{name}_aspp_concat")(branches)
    y = _conv_bn_relu(y, filters, 1, f"{name}_aspp_project")
    if aspp_dropout > 0:
        y = keras.layers.Dropout(aspp_dropout, name=f"{name}_aspp_dropout")(y)
    y = _conv_bn_relu(y, filters, 3, f"{name}_conv3x3")
    if backbone_weights is not None and variant == "torchvision":
        if width != 1.0:
            raise InputError(f"backbone_weights needs width 1.0 (the DeepLabV3 the weights belong to), got {width}")
        _, converted = pretrained.load_pretrained(backbone_weights)
        prefix = pretrained.CONVERTED_DECODER_NAME
        pretrained.copy_weights_by_name(pretrained.torchvision_decoder_layers(converted), keras.Model(x, y).layers,
                                        rename=lambda layer: name + layer[len(prefix):], what="converted decoder")
    return y
