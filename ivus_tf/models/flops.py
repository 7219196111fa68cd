"""Count the floating-point operations of a forward pass, layer by layer, from the model's shapes.

A multiply-add counts as 2 FLOPs. Convolutions (plain, dilated, strided, transposed) and dense layers are counted
exactly from their kernel and output shapes (dilation changes where the kernel reads, not how much it computes);
batch norm, activations, additions, pooling and resizing are counted as a few FLOPs per output element and
reported separately, since they are memory-bound rather than compute-bound. A training step costs about three
forward passes (forward, gradient with respect to activations, gradient with respect to weights).
"""

from __future__ import annotations

import math

import keras

from ivus_tf.models.build import iter_layers

ELEMENTWISE_FLOPS = {  # per output element, rough
    "BatchNormalization": 2, "ReLU": 1, "Activation": 1, "Add": 1, "UpSampling2D": 4, "Resizing": 4,
    "GlobalAveragePooling2D": 1, "AveragePooling2D": 1, "MaxPooling2D": 1, "Concatenate": 0,
}


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape[1:])


def count_flops(model: keras.Model) -> dict:
    """FLOPs of one forward pass for ONE image: {"conv_dense": ..., "elementwise": ..., "total": ...}.

    The model must have a fully defined input shape (apart from the batch).
    """
    conv_dense = elementwise = 0
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            kh, kw, c_out, c_in = layer.kernel.shape
            conv_dense += 2 * _elements(layer.input.shape[:-1] + (1,)) * kh * kw * c_in * c_out
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            conv_dense += 2 * _elements(layer.output.shape) * kh * kw * c_in
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, _, _ = layer.kernel.shape
            conv_dense += 2 * _elements(layer.output.shape) * kh * kw
        elif isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.kernel.shape
            conv_dense += 2 * _elements(layer.output.shape) * c_in
        else:
            for base in type(layer).__mro__:
                if base.__name__ in ELEMENTWISE_FLOPS:
                    elementwise += ELEMENTWISE_FLOPS[base.__name__] * _elements(layer.output.shape)
                    break
    return {"conv_dense": int(conv_dense), "elementwise": int(elementwise), "total": int(conv_dense + elementwise)}
