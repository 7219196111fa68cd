"""U-Net with residual blocks: structure, parameter count, head options, save/load, weight transfer, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.models import build_model, transfer_encoder_weights, unet_res

WIDTH = 0.0625  # stage channels 5, 10, 20, 40
SIZE = (64, 64, 1)
TWO_TASKS = ("calcium", "wall_lumen")
HEAD_SIZE = {"calcium": 2, "wall_lumen": 3}


def tiny(tasks=TWO_TASKS, head="linear", input_shape=SIZE, **kwargs) -> keras.Model:
    return build_model("unet_res", tasks, input_shape=input_shape, width=WIDTH, head=head, **kwargs)


def images(batch=2, size=SIZE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (batch, *size)).astype("float32")


def numpy(weight) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(weight))


def predict(model: keras.Model, x: np.ndarray) -> dict:
    """Inference without `model.predict`, whose tf.function tracing costs more than the tiny model's run."""
    return {task: keras.ops.convert_to_numpy(value) for task, value in model(x, training=False).items()}


def linear_heads(tasks, width=WIDTH, stages="doubling") -> int:
    c1 = unet_res.stage_channels(width, stages)[1]
    return sum(c1 * HEAD_SIZE[task] + HEAD_SIZE[task] for task in tasks)


@pytest.mark.parametrize("tasks", [("calcium",), ("wall_lumen",), TWO_TASKS])
def test_outputs_are_per_task_softmax_at_input_size(tasks):
    model = tiny(tasks)
    outputs = predict(model, images(3))
    assert sorted(outputs) == sorted(tasks)
    for task, probabilities in outputs.items():
        assert probabilities.shape == (3, 64, 64, HEAD_SIZE[task])
        assert probabilities.dtype == np.float32
        assert probabilities.min() >= 0
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_encoder_features_by_stride():
    encoder = tiny().get_layer("encoder")
    features = encoder(images(2))
    channels = unet_res.stage_channels(WIDTH)
    assert channels == {1: 5, 2: 10, 4: 20, 8: 40}  # the doubling design
    assert sorted(features) == ["stride_1", "stride_2", "stride_4", "stride_8"]
    for stride in (1, 2, 4, 8):
        assert tuple(features[f"stride_{stride}"].shape) == (2, 64 // stride, 64 // stride, channels[stride])
    # three strided convolutions down, three transposed convolutions up, three residual blocks per stage
    model = tiny(("calcium",))
    strided = [layer.name for layer in encoder.layers
               if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2)]
    assert strided == ["stride_2_down_conv", "stride_4_down_conv", "stride_8_down_conv"]
    transposed = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert transposed == ["decoder_stride_4_up_conv", "decoder_stride_2_up_conv", "decoder_stride_1_up_conv"]
    adds = [layer.name for layer in encoder.layers + model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 7 * 3 and "stride_8_block3_add" in adds and "decoder_stride_1_block3_add" in adds
    # the skips come from the encoder feature of the same stride
    assert all(model.get_layer(f"decoder_stride_{s}_concat").output.shape[-1] == 2 * channels[s] for s in (1, 2, 4))


@pytest.mark.parametrize("stages, expected", [("doubling", 41_659_045), ("wide_bottom", 41_493_829)])
def test_full_size_parameter_count_is_the_papers_40m(stages, expected):
    """The paper compares two ~40 M models. Counted by building the width-1.0 model at 32x32 (the count does not
    depend on the input size; ~1 s)."""
    model = build_model("unet_res", TWO_TASKS, input_shape=(32, 32, 1), stages=stages)
    count = model.count_params()
    assert count == expected  # documented in docs/models.md
    assert abs(count - 40e6) / 40e6 < 0.05
    counts = unet_res.parameter_count(1.0, stages=stages)
    assert count == counts["encoder"] + counts["decoder"] + linear_heads(TWO_TASKS, 1.0, stages)
    assert model.get_layer("encoder").count_params() == counts["encoder"]


def test_default_is_the_plain_doubling_u_net():
    """The paper's U-Net was the larger, slower network (268 ms / 15.8 GB vs DeepLabV3's 97 ms / 5.4 GB at batch
    12): channels double at every downsampling, most weights are not in the bottom stage."""
    assert unet_res.stage_channels(1.0) == {1: 80, 2: 160, 4: 320, 8: 640}
    assert unet_res.stage_channels(1.0, "wide_bottom") == {1: 32, 2: 64, 4: 128, 8: 832}
    model = build_model("unet_res", ("calcium",), input_shape=(32, 32, 1), width=0.125)
    encoder = model.get_layer("encoder")
    assert encoder.get_layer("stride_8_block1_conv1").kernel.shape[-1] == 80
    assert encoder.get_layer("stem_conv").kernel.shape[-1] == 10
    with pytest.raises(InputError, match="unet_res: stages 'wide' is unknown; valid: doubling, wide_bottom"):
        build_model("unet_res", ("calcium",), input_shape=(32, 32, 1), width=0.125, stages="wide")


@pytest.mark.parametrize("width, stages", [(WIDTH, "doubling"), (0.1, "doubling"), (0.1, "wide_bottom")])
def test_parameter_count_formula_matches_keras(width, stages):
    model = build_model("unet_res", ("calcium",), input_shape=(40, 40, 1), width=width, stages=stages)
    counts = unet_res.parameter_count(width, stages=stages)
    assert model.get_layer("encoder").count_params() == counts["encoder"]
    assert model.count_params() == counts["encoder"] + counts["decoder"] + linear_heads(("calcium",), width, stages)


@pytest.mark.slow
def test_head_options():
    sizes = {(tasks, head): tiny(tasks, head).count_params()
             for tasks in [("calcium",), TWO_TASKS] for head in ("linear", "conv", "decoder")}
    one, two = sizes[("calcium",), "linear"], sizes[TWO_TASKS, "linear"]
    assert 0 < two - one < 0.01 * one
    assert two - one == linear_heads(("wall_lumen",))
    assert sizes[TWO_TASKS, "conv"] > sizes[TWO_TASKS, "linear"]
    # "decoder": a one-task model is the same as "linear"; two tasks duplicate the whole up-path
    assert sizes[("calcium",), "decoder"] == one
    assert sizes[TWO_TASKS, "decoder"] == two + unet_res.parameter_count(WIDTH)["decoder"]
    model = tiny(TWO_TASKS, "decoder")
    names = {layer.name for layer in model.layers}
    for task in TWO_TASKS:
        for stride in (4, 2, 1):
            assert f"{task}_decoder_stride_{stride}_up_conv" in names
            assert f"{task}_decoder_stride_{stride}_block3_out" in names
    assert not any(name.startswith("decoder_") for name in names)


def test_save_and_load_give_identical_outputs(tmp_path):
    model = tiny(TWO_TASKS, "conv")
    x = images(2, seed=3)
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode: no Lambda layers, no custom objects
    before, after = predict(model, x), predict(loaded, x)
    assert sorted(after) == sorted(TWO_TASKS)
    for task in TWO_TASKS:
        np.testing.assert_array_equal(before[task], after[task])
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


def test_transfer_encoder_weights_from_wall_lumen_to_calcium():
    source, target = tiny(("wall_lumen",)), tiny(("calcium",))
    rng = np.random.default_rng(1)
    for weight in source.get_layer("encoder").weights:  # every weight, BN statistics too, differs from the target
        weight.assign(rng.normal(0.5, 0.1, weight.shape).astype("float32"))
    encoder_weights = target.get_layer("encoder").weights
    encoder_ids = {id(w) for w in encoder_weights}
    other = [w for w in target.weights if id(w) not in encoder_ids]  # decoder and head
    assert len(other) > 0 and len(other) + len(encoder_weights) == len(target.weights)
    before = [numpy(w) for w in other]
    source_weights = source.get_layer("encoder").weights
    assert not any(np.array_equal(numpy(s), numpy(d)) for s, d in zip(source_weights, encoder_weights))

    copied = transfer_encoder_weights(source, target)

    assert copied == len(encoder_weights) > 0
    for s, d in zip(source_weights, encoder_weights):
        assert s.path == d.path
        np.testing.assert_array_equal(numpy(s), numpy(d))
    for weight, value in zip(other, before):
        np.testing.assert_array_equal(numpy(weight), value)


def test_transfer_refuses_another_width():
    with pytest.raises(InputError, match="differ in shape"):
        transfer_encoder_weights(tiny(("wall_lumen",)), build_model("unet_res", ("calcium",), SIZE, width=0.125))


@pytest.mark.parametrize("size", [(40, 40), (24, 56)])
def test_input_sizes_that_are_multiples_of_8(size):
    model = tiny(input_shape=(*size, 1))
    outputs = predict(model, images(1, (*size, 1)))
    assert outputs["calcium"].shape == (1, *size, 2) and outputs["wall_lumen"].shape == (1, *size, 3)


@pytest.mark.parametrize("size", [(60, 64), (64, 36), (250, 250)])
def test_other_input_sizes_are_refused(size):
    height, width = size
    with pytest.raises(InputError, match=rf"unet_res: input size {height}x{width} \(HxW\) must be a multiple of 8"):
        tiny(input_shape=(*size, 1))


def test_any_size_model_runs_on_multiples_of_8():
    model = tiny(("calcium",), input_shape=(None, None, 1))
    assert predict(model, images(1, (48, 32, 1)))["calcium"].shape == (1, 48, 32, 2)


@pytest.mark.slow
def test_a_few_training_steps_reduce_the_loss():
    """Learn 'calcium is where the image is bright' on random frames: a per-pixel cross-entropy must drop."""
    keras.utils.set_random_seed(0)
    model = tiny(("calcium",), input_shape=(32, 32, 1))
    x = images(4, (32, 32, 1), seed=5)
    y = keras.utils.to_categorical(x[..., 0] > 0.5, 2)
    # eager: tracing the train step as a tf.function takes ~15 s on two cores, an eager step ~0.7 s
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"calcium": "categorical_crossentropy"},
                  run_eagerly=True)
    history = model.fit(x, {"calcium": y}, batch_size=4, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses  # seeded: 0.78 -> 0.66
