"""U-Net with residual blocks (Bargsten et al., CDBME 2021, "Deep learning for calcium segmentation in IVUS").

Three residual blocks per down- and up-scaling stage, three downsamplings by strided convolutions, upsampling by
transposed convolutions, skips between stages of equal stride, picked by key ("stride_<s>"). Blocks are
post-activation (ResNet v1, like the DeepLabV3 it is compared with), so every stage ends batch-normalised and
rectified; the decoder output is C1 channels at stride 1. `stages`: "doubling" (80-160-320-640 channels at width
1.0, default: the paper's ~40 M network) or "wide_bottom" (32-64-128-832: the same weights at about a third of the
FLOPs). Input height and width must be multiples of 8, else `InputError` (sizes left None are not checked). Layer
names are stable (`stem_conv`, `stride_8_block3_conv2`, `<decoder name>_stride_4_up_conv`, ...). Layout, parameter
counts and the paper's timings: docs/models.md#u-net-with-residual-blocks-ivus_tfmodelsunet_res.
"""

from __future__ import annotations

import keras

from ivus_tf.core.errors import InputError

DECODER_STRIDE = 1
OPTIONS = ("stages",)
STAGE_DESIGNS = {  # stage channels at width 1.0, by stride
    "doubling": {1: 80, 2: 160, 4: 320, 8: 640},
    "wide_bottom": {1: 32, 2: 64, 4: 128, 8: 832},
}
DEFAULT_STAGES = "doubling"
BLOCKS_PER_STAGE = 3
DECODER_STRIDES = (4, 2, 1)  # up-path stages, bottom (stride 8) upwards


def stage_channels(width: float, stages: str = DEFAULT_STAGES) -> dict[int, int]:
    """{stride: channels} of the encoder and decoder stages at `width` for the design `stages`."""
    if stages not in STAGE_DESIGNS:
        raise InputError(f"unet_res: stages {stages!r} is unknown; valid: {', '.join(STAGE_DESIGNS)}")
    return {stride: max(1, int(round(base * width))) for stride, base in STAGE_DESIGNS[stages].items()}


def apply_conv_bn(x, channels: int, kernel_size: int, name: str, strides: int = 1, relu: bool = True):
    """conv (no bias) -> BN [-> ReLU], layers `<name>_conv`, `<name>_bn`, `<name>_relu`."""
    x = keras.layers.Conv2D(channels, kernel_size, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def apply_residual_block(x, channels: int, name: str):
    """Post-activation basic block: relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x)).

    The shortcut is `x` itself when it already has `channels` channels, otherwise a 1x1 conv + BN projection.
    """
    if x.shape[-1] == channels:
        shortcut = x
    else:
        shortcut = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_shortcut_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn2")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def apply_stage(x, channels: int, name: str, blocks: int = BLOCKS_PER_STAGE):
    """`blocks` residual blocks `<name>_block1`, `<name>_block2`, ..."""
    for index in range(1, blocks + 1):
        x = apply_residual_block(x, channels, name=f"{name}_block{index}")
    return x


def apply_up_stage(x, skip, channels: int, name: str):
    """2x2 transposed conv, stride 2 -> BN -> ReLU, concatenated with the skip feature, then a residual stage."""
    x = keras.layers.Conv2DTranspose(channels, 2, strides=2, use_bias=False, name=f"{name}_up_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_up_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_up_relu")(x)
    x = keras.layers.Concatenate(name=f"{name}_concat")([x, skip])
    return apply_stage(x, channels, name=name)


def _check_input_size(inputs) -> None:
    height, width = inputs.shape[1], inputs.shape[2]
    if any(size is not None and size % 8 for size in (height, width)):
        raise InputError(f"unet_res: input size {height}x{width} (HxW) must be a multiple of 8 in both "
                         f"dimensions (three stride-2 downsamplings); resize or pad the frames, e.g. to 256x256")


def encoder(inputs, width: float, stages: str = DEFAULT_STAGES) -> dict:
    """Down-path: {"stride_1", "stride_2", "stride_4", "stride_8"} -> features; "stride_8" is the bottom of the U."""
    _check_input_size(inputs)
    channels = stage_channels(width, stages)
    x = apply_conv_bn(inputs, channels[1], 3, name="stem")
    features = {"stride_1": apply_stage(x, channels[1], name="stride_1")}
    for stride in (2, 4, 8):
        x = apply_conv_bn(features[f"stride_{stride // 2}"], channels[stride], 3, strides=2,
                          name=f"stride_{stride}_down")
        features[f"stride_{stride}"] = apply_stage(x, channels[stride], name=f"stride_{stride}")
    return features


def decoder(features: dict, width: float, name: str, stages: str = DEFAULT_STAGES):
    """Up-path from features["stride_8"] to stride 1, with the encoder's skip features picked by stride key."""
    channels = stage_channels(width, stages)
    x = features["stride_8"]
    for stride in DECODER_STRIDES:
        x = apply_up_stage(x, features[f"stride_{stride}"], channels[stride], name=f"{name}_stride_{stride}")
    return x


def _conv_bn(c_in: int, c_out: int, kernel_size: int) -> int:
    return kernel_size * kernel_size * c_in * c_out + 4 * c_out  # BN: gamma, beta, moving mean and variance


def _block(c_in: int, c_out: int) -> int:
    shortcut = _conv_bn(c_in, c_out, 1) if c_in != c_out else 0
    return shortcut + _conv_bn(c_in, c_out, 3) + _conv_bn(c_out, c_out, 3)


def _stage(c_in: int, c_out: int) -> int:
    return _block(c_in, c_out) + (BLOCKS_PER_STAGE - 1) * _block(c_out, c_out)


def parameter_count(width: float = 1.0, input_channels: int = 1, stages: str = DEFAULT_STAGES) -> dict:
    """{"encoder": n, "decoder": n}: the weights (batch-norm moving statistics included) of each part at `width`.

    Counted from the widths alone (the count does not depend on the input size); `build_model` adds the heads.
    """
    c = stage_channels(width, stages)
    encoder_count = _conv_bn(input_channels, c[1], 3) + _stage(c[1], c[1])
    for stride in (2, 4, 8):
        encoder_count += _conv_bn(c[stride // 2], c[stride], 3) + _stage(c[stride], c[stride])
    decoder_count = 0
    for stride in DECODER_STRIDES:
        decoder_count += _conv_bn(c[2 * stride], c[stride], 2) + _stage(2 * c[stride], c[stride])
    return {"encoder": encoder_count, "decoder": decoder_count}
