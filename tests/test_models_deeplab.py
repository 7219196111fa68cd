"""DeepLabV3-ResNet50 (output stride 8): shapes, strides, ResNet50 layer names and weight loading, AtrousConv2D
against keras' Conv2D, .keras round trips, encoder transfer, training steps."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import JAX_MISSING, jax_python, run_jax_check
from ivus_tf.core.errors import InputError
from ivus_tf.models import build_model, deeplabv3, transfer_encoder_weights
from ivus_tf.models.layers import AtrousConv2D, NaturalImageAdapter, SpatialBroadcast, native_dilated_conv_available

WIDTH = 0.0625
SIZE = 64
ROOT = Path(__file__).resolve().parents[1]


def small_model(tasks=("calcium", "wall_lumen"), **options) -> keras.Model:
    return build_model("deeplabv3", tasks=tasks, input_shape=(SIZE, SIZE, 1), width=WIDTH, **options)


def frames(batch=2, seed=0, size=SIZE) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, size, size, 1), dtype=np.float32)


def run(model: keras.Model, x):
    """Inference outputs as numpy (a direct call: faster than tracing `predict` for these deep graphs)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))


def resnet50(size=SIZE) -> keras.Model:
    return keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, 3))


def perturb_weights(model: keras.Model, seed=0) -> None:
    """Random but well-scaled weights, so copying and numerics are checked on non-default values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            fan_in = np.prod(kernel.shape[:3])
            layer.set_weights([rng.normal(0, np.sqrt(2 / fan_in), kernel.shape), rng.normal(0, 0.1, bias.shape)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape), rng.normal(0, 0.1, shape),
                               rng.uniform(0.5, 2.0, shape)])


@pytest.fixture(scope="module")
def default_model() -> keras.Model:
    """`small_model()`, built once for the tests that only read it (a DeepLabV3 build costs about a second)."""
    return small_model()


def test_outputs_are_per_task_softmax_at_input_size(default_model):
    outputs = run(default_model, frames())
    assert outputs["calcium"].shape == (2, SIZE, SIZE, 2)
    assert outputs["wall_lumen"].shape == (2, SIZE, SIZE, 3)
    for probabilities in outputs.values():
        assert np.all(probabilities >= 0)
        np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-5)


def test_encoder_features_and_output_stride_8(default_model):
    encoder = default_model.get_layer("encoder")
    shapes = {key: tuple(tensor.shape) for key, tensor in encoder.output.items()}
    assert shapes == {"stride_2": (None, 32, 32, 4), "stride_4": (None, 16, 16, 16),
                      "stride_8": (None, 8, 8, int(2048 * WIDTH))}
    # stages 4 and 5 keep stride 1 and dilate instead (torchvision's replace_stride_with_dilation)
    rates = {layer.name: layer.dilation_rate[0] for layer in encoder.layers if layer.name.endswith("_2_conv")}
    assert {name: rate for name, rate in rates.items() if rate > 1} == {
        **{f"conv4_block{i}_2_conv": 2 for i in range(2, 7)}, "conv5_block1_2_conv": 2,
        "conv5_block2_2_conv": 4, "conv5_block3_2_conv": 4}
    assert all(isinstance(encoder.get_layer(name), AtrousConv2D) for name, rate in rates.items() if rate > 1)


def test_encoder_and_decoder_take_any_frame_size():
    # (build.py's head upsamples with UpSampling2D, which needs a static size; the ASPP itself does not)
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, deeplabv3.decoder(deeplabv3.encoder(inputs, WIDTH), WIDTH, name="decoder"))
    for size in (64, 96):
        assert run(model, frames(1, size=size)).shape == (1, size // 8, size // 8, 16)


def test_layer_names_and_structure_match_keras_resnet50(default_model):
    ours = {layer.name: layer for layer in default_model.get_layer("encoder").layers[1:]}
    reference = {layer.name: layer for layer in resnet50().layers[1:]}  # [0]: the input layer
    assert set(ours) == set(reference)
    for name, layer in reference.items():
        if isinstance(layer, keras.layers.Conv2D):
            dilated_instead = name.startswith(("conv4_block1_", "conv5_block1_"))  # output stride 8
            assert ours[name].strides == ((1, 1) if dilated_instead else layer.strides), name
            assert ours[name].kernel_size == layer.kernel_size, name
            assert ours[name].use_bias == layer.use_bias, name


def test_aspp_layers_and_rates_option(default_model):
    model = small_model(tasks=("calcium",), aspp_rates=(2, 3, 5, 7))
    atrous = [model.get_layer(f"decoder_aspp_atrous{i}_conv") for i in range(1, 5)]
    assert [layer.dilation_rate for layer in atrous] == [(2, 2), (3, 3), (5, 5), (7, 7)]
    assert all(isinstance(layer, AtrousConv2D) for layer in atrous)
    assert model.get_layer("decoder_aspp_concat").output.shape[-1] == 6 * 16
    assert [default_model.get_layer(f"decoder_aspp_atrous{i}_conv").dilation_rate[0] for i in (1, 2, 3)] == list(
        deeplabv3.DEFAULT_ASPP_RATES)
    for bad in ((), (6, 0, 18), (6.5,), "abc"):
        with pytest.raises(InputError, match="aspp_rates"):
            small_model(aspp_rates=bad)
    with pytest.raises(InputError, match="aspp_dropout"):
        small_model(aspp_dropout=1.0)
    with pytest.raises(InputError, match="unknown option"):
        small_model(aspp_rate=(6, 12, 18))


def test_parameter_count_at_width_1_is_the_papers_40_million():
    model = build_model("deeplabv3", input_shape=(256, 256, 1))
    assert abs(model.count_params() - 40e6) < 0.1 * 40e6
    # the backbone is exactly keras' ResNet50 without top, less conv1's two extra input channels
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(256, 256, 3))
    assert model.get_layer("encoder").count_params() == reference.count_params() - 2 * 7 * 7 * 64


@pytest.mark.parametrize("rate", [1, 2, 5, 12])
def test_atrous_conv_is_keras_conv2d(rate):
    import tensorflow as tf

    x = tf.constant(frames(2, seed=rate, size=8).repeat(3, axis=-1) + np.arange(3, dtype=np.float32))
    plain = keras.layers.Conv2D(5, 3, padding="same", dilation_rate=rate)
    atrous = AtrousConv2D(5, 3, padding="same", dilation_rate=rate)
    plain.build(x.shape)
    atrous.build(x.shape)
    atrous.set_weights([w + np.float32(0.1) for w in plain.get_weights()])  # non-zero bias too
    plain.set_weights(atrous.get_weights())

    def value_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cos(y))
        return [y, *tape.gradient(loss, [x, layer.kernel, layer.bias])]

    for ours, theirs in zip(value_and_gradients(atrous), value_and_gradients(plain)):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-4)
    # the point of the layer: no SpaceToBatchND lowering on the TensorFlow backend (rate 12 > the 8x8 map too),
    # unless the native op has no gradient here (TF_ENABLE_ONEDNN_OPTS=0 on a CPU), where it is keras' Conv2D
    graph_ops = {op.type for op in tf.function(atrous).get_concrete_function(x).graph.get_operations()}
    plain_ops = {op.type for op in tf.function(plain).get_concrete_function(x).graph.get_operations()}
    assert ("SpaceToBatchND" in plain_ops) == (rate > 1)
    assert ("SpaceToBatchND" in graph_ops) == (rate > 1 and not native_dilated_conv_available())
    restored = keras.layers.deserialize(keras.layers.serialize(atrous))
    assert type(restored) is AtrousConv2D and restored.get_config() == atrous.get_config()


def test_custom_layers_serialize_completely():
    adapter = NaturalImageAdapter(scale=2.0, mean=(1.0, 2.0, 3.0), name="a")
    restored = keras.layers.deserialize(keras.layers.serialize(adapter))
    assert restored.get_config() == adapter.get_config()
    np.testing.assert_allclose(restored(np.ones((1, 2, 2, 1), np.float32))[0, 0, 0], [1.0, 0.0, -1.0])
    broadcast = keras.layers.deserialize(keras.layers.serialize(SpatialBroadcast(name="b")))
    out = broadcast([np.arange(3, dtype=np.float32).reshape(1, 1, 1, 3), np.zeros((1, 4, 5, 7), np.float32)])
    np.testing.assert_array_equal(out, np.broadcast_to(np.arange(3), (1, 4, 5, 3)))


def test_adapter_is_keras_caffe_preprocessing():
    x = frames(2)
    expected = keras.applications.resnet50.preprocess_input(np.repeat(255 * x, 3, axis=-1))
    np.testing.assert_allclose(NaturalImageAdapter()(x), expected, rtol=1e-6, atol=1e-4)


def test_keras_round_trip_in_safe_mode(tmp_path, default_model):
    model = default_model
    x = frames()
    path = tmp_path / "deeplab.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for task, value in run(model, x).items():
        np.testing.assert_allclose(run(loaded, x)[task], value, atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.get_layer("encoder").layers)


def save_legacy_h5(model: keras.Model, path) -> None:
    """The format of keras' resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 (layer_names, weight_names)."""
    from ivus_tf.compat import save_legacy_h5_weights

    save_legacy_h5_weights(model, path)


@pytest.mark.parametrize("filename", ["resnet50_notop.weights.h5",
                                      "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"])
@pytest.mark.slow
def test_backbone_weights_load_by_name_and_compute_resnet50_features(tmp_path, filename):
    reference = resnet50()
    perturb_weights(reference)
    path = tmp_path / filename
    if filename.endswith(".weights.h5"):
        reference.save_weights(path)
    else:
        save_legacy_h5(reference, path)
    model = build_model("deeplabv3", tasks=("calcium",), input_shape=(SIZE, SIZE, 1), backbone_weights=path)
    encoder = model.get_layer("encoder")
    assert isinstance(encoder.layers[1], NaturalImageAdapter)
    copied = 0
    for layer in reference.layers[1:]:
        for ours, theirs in zip(encoder.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
            copied += 1
    assert copied == len(reference.weights)

    # The undilated stages compute keras.applications' features from the adapter-preprocessed frame.
    x = frames()
    ours = run(keras.Model(encoder.input, encoder.get_layer("conv3_block4_out").output), x)
    theirs = run(keras.Model(reference.input, reference.get_layer("conv3_block4_out").output),
                 keras.applications.resnet50.preprocess_input(np.repeat(255 * x, 3, axis=-1)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * np.abs(theirs).max())

    if filename.endswith(".weights.h5"):  # round trip with the adapter (one full-size save is enough)
        saved = tmp_path / "deeplab_r50.keras"
        model.save(saved)
        loaded = keras.saving.load_model(saved, safe_mode=True)
        np.testing.assert_allclose(run(loaded, x)["calcium"], run(model, x)["calcium"], atol=1e-6)


def test_bad_backbone_weights_are_input_errors(tmp_path):
    missing = tmp_path / "missing.weights.h5"
    with pytest.raises(InputError, match="missing.weights.h5: no such file"):
        build_model("deeplabv3", input_shape=(SIZE, SIZE, 1), backbone_weights=missing)
    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not hdf5")
    with pytest.raises(InputError, match="junk.weights.h5: not the weights of keras.applications.ResNet50"):
        build_model("deeplabv3", input_shape=(SIZE, SIZE, 1), backbone_weights=junk)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    other.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(InputError, match="other.weights.h5: .*conv1_conv"):
        build_model("deeplabv3", input_shape=(SIZE, SIZE, 1), backbone_weights=tmp_path / "other.weights.h5")
    save_legacy_h5(other, tmp_path / "other.h5")
    with pytest.raises(InputError, match="other.h5: .*mismatch"):
        build_model("deeplabv3", input_shape=(SIZE, SIZE, 1), backbone_weights=tmp_path / "other.h5")
    with pytest.raises(InputError, match="width 1.0"):
        small_model(backbone_weights=junk)
    with pytest.raises(InputError, match="1-channel"):
        build_model("deeplabv3", input_shape=(SIZE, SIZE, 3), backbone_weights=junk)


def test_transfer_encoder_weights_between_deeplab_models():
    source, target = small_model(("wall_lumen",)), small_model(("calcium",))
    perturb_weights(source.get_layer("encoder"), seed=3)
    decoder_before = target.get_layer("decoder_conv3x3_conv").get_weights()[0].copy()
    count = transfer_encoder_weights(source, target)
    assert count == len(source.get_layer("encoder").weights)
    x = frames()
    for key, value in run(source.get_layer("encoder"), x).items():
        np.testing.assert_allclose(run(target.get_layer("encoder"), x)[key], value, atol=1e-6)
    np.testing.assert_array_equal(target.get_layer("decoder_conv3x3_conv").get_weights()[0], decoder_before)


@pytest.mark.slow
def test_a_few_training_steps_reduce_the_loss():
    keras.utils.set_random_seed(0)
    model = small_model(aspp_dropout=0.0)  # no dropout noise in a 3-step loss comparison
    x = frames(4)
    calcium = (x[..., 0] > 0.5).astype(np.int32)
    y = {"calcium": np.eye(2, dtype=np.float32)[calcium],
         "wall_lumen": np.eye(3, dtype=np.float32)[np.minimum(2, (x[..., 0] * 3).astype(np.int32))]}
    # eager: tracing the train step of a ResNet50-deep graph takes ~20 s on the 2-core CPU, a step eagerly ~1 s
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", run_eagerly=True)
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


JAX_CHECK = """
import tempfile
import keras
import numpy as np
from ivus_tf.models import build_model, transfer_encoder_weights
from ivus_tf.models.layers import AtrousConv2D
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
model = build_model("deeplabv3", input_shape=(64, 64, 1), width=0.0625, aspp_dropout=0.0)
x = np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32)
out = model.predict(x, verbose=0)
assert out["calcium"].shape == (2, 64, 64, 2) and out["wall_lumen"].shape == (2, 64, 64, 3)
with tempfile.TemporaryDirectory() as folder:
    model.save(f"{folder}/m.keras")
    loaded = keras.saving.load_model(f"{folder}/m.keras", safe_mode=True)
    assert all(np.abs(loaded.predict(x, verbose=0)[k] - out[k]).max() < 1e-6 for k in out)
for rate in (2, 12):
    atrous = AtrousConv2D(5, 3, padding="same", dilation_rate=rate)
    plain = keras.layers.Conv2D(5, 3, padding="same", dilation_rate=rate)
    atrous.build((2, 8, 8, 1)); plain.build((2, 8, 8, 1)); atrous.set_weights(plain.get_weights())
    assert np.abs(np.asarray(atrous(x[:, :8, :8])) - np.asarray(plain(x[:, :8, :8]))).max() < 1e-5
y = {"calcium": np.eye(2, dtype=np.float32)[(x[..., 0] > 0.5).astype(int)],
     "wall_lumen": np.eye(3, dtype=np.float32)[(x[..., 0] * 3).astype(int)]}
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
losses = model.fit(x, y, epochs=3, verbose=0).history["loss"]
assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
target = build_model("deeplabv3", tasks=("calcium",), input_shape=(64, 64, 1), width=0.0625)
assert transfer_encoder_weights(model, target) == len(model.get_layer("encoder").weights)
print("jax backend ok")
"""


@pytest.mark.slow
@pytest.mark.skipif(jax_python() is None, reason=JAX_MISSING)
def test_deeplab_runs_on_the_jax_backend():
    run_jax_check(JAX_CHECK, timeout_s=300)
