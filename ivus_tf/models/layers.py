"""Custom layers of the models: a dilated convolution with a fast TensorFlow path, the input adapter for
natural-image backbone weights, the broadcast of ASPP's image-pooling branch, and PyTorch-style bilinear resizing.

All are registered serializable (package "ivus_tf") with a complete `get_config`, so `.keras` files load in safe
mode without Lambda layers; all use `keras.ops` except `AtrousConv2D`'s TensorFlow-only fast path.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from ivus_tf import compat

# Caffe-style ImageNet preprocessing of keras.applications.resnet50.preprocess_input: RGB -> BGR, then subtract
# the ImageNet mean per BGR channel, no scaling (pixels stay in [0, 255]).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# torchvision's ImageNet normalisation of RGB in [0, 1]: (x - mean) / std per channel.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


@functools.cache
def native_dilated_conv_available() -> bool:
    """Whether `tf.nn.conv2d(..., dilations=r)` runs forward *and* backward here.

    CPU: only through oneDNN (TF's own CPU kernels have no dilated backprop: "Current CPU implementations do not
    yet support dilation rates larger than 1"), i.e. when TF is built with oneDNN and `TF_ENABLE_ONEDNN_OPTS` is
    not 0. GPU: cuDNN has native dilated kernels.
    """
    from ivus_tf.core.tf_import import import_tensorflow

    tf = import_tensorflow()
    try:
        if compat.onednn_enabled():
            return True
    except (ImportError, AttributeError):  # TF moved it: the plain Conv2D path (tests/test_compat.py says so)
        pass
    return bool(tf.config.list_physical_devices("GPU"))


@keras.saving.register_keras_serializable(package="ivus_tf")
class AtrousConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose dilated convolutions run TensorFlow's native dilated kernel.

    Keras lowers a dilated convolution to SpaceToBatchND -> convolution -> BatchToSpaceND, computing every tap,
    padding included; `tf.nn.conv2d(..., dilations=r)` skips the taps that fall off the map (faster the larger the
    rate: BENCHMARKS.md). Taken on the TensorFlow backend for stride-1, ungrouped, channels-last dilated convolutions
    where the native op has a gradient; everything else is exactly `keras.layers.Conv2D` (same weights, config,
    outputs and gradients: tests/test_models_deeplab.py).
    """

    def _native_path(self) -> bool:
        return (keras.backend.backend() == "tensorflow" and max(self.dilation_rate) > 1
                and self.strides == (1, 1) and self.groups == 1 and self.data_format == "channels_last"
                and native_dilated_conv_available())

    def convolution_op(self, inputs, kernel):
        if not self._native_path():
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return tf.nn.conv2d(inputs, ops.cast(kernel, inputs.dtype), strides=1, padding=self.padding.upper(),
                            dilations=list(self.dilation_rate), data_format="NHWC")


@keras.saving.register_keras_serializable(package="ivus_tf")
class NaturalImageAdapter(keras.layers.Layer):
    """Grayscale frames in [0, 1] -> what natural-image backbone weights expect.

    x -> x * `scale` -> the gray value in all 3 channels -> (x - `mean`) / `std` per channel. The defaults are
    keras.applications' "caffe" mode of its ResNet50 weights (`keras.applications.resnet50.preprocess_input` of
    the gray image as an RGB picture: 8-bit values minus the BGR ImageNet mean; for a gray image the RGB -> BGR
    swap changes nothing). torchvision's weights take scale 1 and `IMAGENET_MEAN_RGB` / `IMAGENET_STD_RGB`.
    """

    def __init__(self, scale: float = 255.0, mean=IMAGENET_MEAN_BGR, std=(1.0, 1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.std) != len(self.mean) or min(self.std) <= 0:
            raise ValueError(f"NaturalImageAdapter: std {self.std} must be > 0, one per mean {self.mean}")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype) * self.scale
        x = ops.concatenate([x] * len(self.mean), axis=-1)
        x = x - ops.cast(ops.convert_to_tensor(self.mean), self.compute_dtype)
        if any(s != 1.0 for s in self.std):
            x = x / ops.cast(ops.convert_to_tensor(self.std), self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError(f"NaturalImageAdapter takes 1 gray channel, got input shape {input_shape}")
        return tuple(input_shape[:-1]) + (len(self.mean),)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


@keras.saving.register_keras_serializable(package="ivus_tf")
class SpatialBroadcast(keras.layers.Layer):
    """[pooled (B, 1, 1, C), reference (B, H, W, *)] -> pooled repeated over H x W: (B, H, W, C).

    ASPP's image-pooling branch: bilinear upsampling of a 1x1 map is this broadcast, which also works when H and W
    are only known at run time.
    """

    def call(self, inputs):
        pooled, reference = inputs
        return pooled + ops.zeros_like(reference[..., :1], dtype=pooled.dtype)

    def compute_output_shape(self, input_shapes):
        pooled, reference = input_shapes
        return tuple(reference[:-1]) + (pooled[-1],)


@keras.saving.register_keras_serializable(package="ivus_tf")
class ResizeToMatch(keras.layers.Layer):
    """[x (B, h, w, C), reference (B, H, W, *)] -> x resized bilinearly to H x W.

    Half-pixel centres without antialiasing, as PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`
    computes it (source coordinate (i + 0.5) * h / H - 0.5, clamped at 0; the upper neighbour clamped at h - 1),
    for any sizes, including ones known only at run time and non-integer ratios (torchvision's DeepLabV3 upsamples
    its stride-8 logits to the input size this way).
    """

    @staticmethod
    def _resize_axis(x, out_size, axis: int):
        in_size = ops.shape(x)[axis]
        scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
        source = ops.maximum((ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5, 0.0)
        lower = ops.minimum(ops.cast(ops.floor(source), "int32"), in_size - 1)
        upper = ops.minimum(lower + 1, in_size - 1)
        fraction = ops.cast(source - ops.cast(lower, "float32"), x.dtype)
        fraction = ops.reshape(fraction, (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        return ops.take(x, lower, axis=axis) * (1 - fraction) + ops.take(x, upper, axis=axis) * fraction

    def call(self, inputs):
        x, reference = inputs
        size = ops.shape(reference)
        return self._resize_axis(self._resize_axis(x, size[1], axis=1), size[2], axis=2)

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[-1])
