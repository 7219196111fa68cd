"""Pins for every private Keras/TensorFlow API in ivus_tf.compat: each fails when the framework changes under it."""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest

from ivus_tf import compat
from ivus_tf.core.tf_import import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402  (after the quiet TensorFlow import)


def tiny_model() -> keras.Model:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_scale_loss_divides_by_the_replicas_in_sync(monkeypatch):
    loss = tf.constant(2.0)
    assert float(compat.scale_loss_for_distribution(loss)) == 2.0  # the default strategy: one replica

    class FourReplicas:
        num_replicas_in_sync = 4

    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: FourReplicas())
    assert float(compat.scale_loss_for_distribution(loss)) == 0.5


def test_build_before_fit_makes_fit_read_the_data_once():
    starts = []

    def frames():
        starts.append(1)
        for i in range(4):
            yield np.full(4, i, np.float32), np.int64(i % 2)

    spec = (tf.TensorSpec([4], tf.float32), tf.TensorSpec([], tf.int64))
    dataset = tf.data.Dataset.from_generator(frames, output_signature=spec)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(4)).batch(2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        plain, built = tiny_model(), tiny_model()
    plain.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert len(starts) == 2  # Keras's own pre-fit build iterates the data once more: why the workaround exists
    starts.clear()
    compat.build_before_fit(built, strategy, (tf.zeros([2, 4]), tf.zeros([2], tf.int64)))
    assert built.built and all(variable is not None for variable in built.metrics_variables)
    built.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert len(starts) == 1


def test_rank_one_step_logs_reach_fit_through_the_instance_steps():
    model = tiny_model()
    x, y = np.ones((2, 4), np.float32), np.array([0, 1])
    assert np.shape(model.train_on_batch(x, y, return_dict=True)["loss"]) == ()
    compat.rank_one_step_logs(model)
    assert np.shape(model.train_on_batch(x, y, return_dict=True)["loss"]) == (1,)
    assert np.shape(model.test_on_batch(x, y, return_dict=True)["accuracy"]) == (1,)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN is the x86 CPU build's default")
def test_onednn_flag_of_the_cpu_build():
    assert compat.onednn_enabled() is (os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0")


def test_tf2onnx_patch_supplies_what_tf2onnx_needs():
    tf2onnx = pytest.importorskip("tf2onnx")
    compat.patch_tf2onnx()
    assert np.object is object  # tf2onnx 1.17 still spells numpy's removed alias
    assert tf2onnx.tfonnx.rewrite_constant_fold.__name__ == "patched_rewrite_constant_fold"


def test_legacy_h5_weights_load_back_by_layer_name(tmp_path):
    model, other = tiny_model(), tiny_model()
    compat.save_legacy_h5_weights(model, tmp_path / "legacy.h5")
    other.load_weights(str(tmp_path / "legacy.h5"))
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_conv2d_calls_convolution_op():
    calls = []

    class Counting(keras.layers.Conv2D):
        def convolution_op(self, inputs, kernel):
            calls.append(1)
            return super().convolution_op(inputs, kernel)

    Counting(2, 3, dilation_rate=2, padding="same")(np.ones((1, 8, 8, 1), np.float32))
    assert calls == [1]  # AtrousConv2D's fast path hangs on this hook


def test_phase_models_set_every_batch_norm_without_private_layer_walks():
    """`iter_layers` replaced `Model._flatten_layers`: it must reach the nested encoder's batch norms too."""
    from ivus_tf.models.build import iter_layers
    from ivus_tf.training.config import TrainConfig
    from ivus_tf.training.phase import build_phase_model
    from ivus_tf.training.schemes import phases_of

    config = TrainConfig(arch="unet_res", width=0.0625, image_size=32, bn_momentum=0.7)
    model = build_phase_model(config, phases_of(config)[0], synchronized=True)
    norms = [layer for layer in iter_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    encoder = model.get_layer("encoder")
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in encoder.layers) > 10
    assert {id(layer) for layer in encoder.layers} & {id(layer) for layer in norms}
    assert all(layer.momentum == 0.7 and layer.synchronized for layer in norms)
    assert len(norms) == sum(isinstance(layer, keras.layers.BatchNormalization)
                             for layer in model._flatten_layers(include_self=False, recursive=True))
