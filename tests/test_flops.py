"""FLOP counting against hand counts."""

import keras

from ivus_tf.models.flops import count_flops


def test_conv_transpose_dense_and_nested_models_are_counted_by_hand():
    inner_in = keras.Input((8, 8, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2)(inner_in))
    x_in = keras.Input((8, 8, 3))
    x = inner(x_in)                                                  # 8*8*4 outputs x 3*3*3 MACs
    x = keras.layers.Conv2D(6, 1, strides=2)(x)                      # 4*4*6 outputs x 4 MACs
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)             # 4*4 inputs x 2*2*6*2 MACs
    x = keras.layers.ReLU()(x)                                       # 8*8*2 elementwise
    y = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))  # 2 x 5 MACs; pooling 2 outputs
    flops = count_flops(keras.Model(x_in, y))
    expected = 2 * (8 * 8 * 4 * 27 + 4 * 4 * 6 * 4 + 4 * 4 * 2 * 2 * 6 * 2 + 2 * 5)
    assert flops["conv_dense"] == expected
    assert flops["elementwise"] == 8 * 8 * 2 + 2
