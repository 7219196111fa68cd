"""Pre-training's weight transfer, wall-lumen model -> calcium model: everything but the classifier by default
(encoder, decoder / ASPP, conv head layers), or the encoder only; for both architectures and every head option."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.models import build_model, transfer_weights
from ivus_tf.models.build import ENCODER_NAME

SIZE = (32, 32, 1)
WIDTH = {"unet_res": 0.0625, "deeplabv3": 0.0625}


def pair(arch: str, head: str = "linear"):
    """(wall-lumen model, calcium model) with every weight of the source, BN statistics too, set apart."""
    source = build_model(arch, ("wall_lumen",), SIZE, width=WIDTH[arch], head=head)
    target = build_model(arch, ("calcium",), SIZE, width=WIDTH[arch], head=head)
    rng = np.random.default_rng(0)
    for weight in source.weights:
        weight.assign(rng.normal(0.5, 0.1, weight.shape).astype("float32"))
    return source, target


def by_layer(model: keras.Model) -> dict:
    """{layer name: [numpy weights]} of the top-level layers, the nested encoder's layers prefixed 'encoder/'."""
    out = {f"{ENCODER_NAME}/{layer.name}": [keras.ops.convert_to_numpy(w) for w in layer.weights]
           for layer in model.get_layer(ENCODER_NAME).layers if layer.weights}
    out.update({layer.name: [keras.ops.convert_to_numpy(w) for w in layer.weights]
                for layer in model.layers if layer.weights and layer.name != ENCODER_NAME})
    return out


def source_name(name: str) -> str:
    return name.replace("calcium_", "wall_lumen_", 1) if name.startswith("calcium_") else name


@pytest.mark.parametrize("arch", ["unet_res", "deeplabv3"])
@pytest.mark.parametrize("head", ["linear", "conv", "decoder"])
def test_all_but_classifier_moves_encoder_and_decoder(arch, head):
    source, target = pair(arch, head)
    before = by_layer(target)
    count = transfer_weights(source, target)  # the default scope
    after, learned = by_layer(target), by_layer(source)
    classifier = "calcium_head_logits"
    assert count == len(target.weights) - len(target.get_layer(classifier).weights)
    decoder = [name for name in after if "decoder" in name]
    assert decoder and (arch != "deeplabv3" or any("aspp" in name for name in decoder))
    for name, values in after.items():
        if name == classifier:  # 2 classes here, 3 in the source: starts fresh
            for value, old in zip(values, before[name]):
                np.testing.assert_array_equal(value, old)
            continue
        for value, wanted in zip(values, learned[source_name(name)]):
            np.testing.assert_array_equal(value, wanted, err_msg=name)


@pytest.mark.parametrize("arch", ["unet_res", "deeplabv3"])
def test_encoder_scope_moves_only_the_encoder(arch):
    source, target = pair(arch)
    before = by_layer(target)
    count = transfer_weights(source, target, "encoder")
    after, learned = by_layer(target), by_layer(source)
    assert count == len(target.get_layer(ENCODER_NAME).weights)
    for name, values in after.items():
        expected = learned[name] if name.startswith(f"{ENCODER_NAME}/") else before[name]
        for value, wanted in zip(values, expected):
            np.testing.assert_array_equal(value, wanted, err_msg=name)
    assert any(not np.array_equal(a, b) for name in after if not name.startswith(ENCODER_NAME)
               for a, b in zip(after[name], learned[source_name(name)]) if name != "calcium_head_logits")


def test_mismatching_models_are_refused_before_any_weight_is_written():
    source = build_model("unet_res", ("wall_lumen",), SIZE, width=0.0625, head="conv")
    target = build_model("unet_res", ("calcium",), SIZE, width=0.0625, head="linear")
    wider = build_model("unet_res", ("calcium",), SIZE, width=0.125, head="conv")
    before = [keras.ops.convert_to_numpy(w) for w in wider.weights]
    with pytest.raises(InputError, match="weights differ in shape"):
        transfer_weights(source, wider)
    for weight, value in zip(wider.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), value)
    transfer_weights(source, target)  # conv head into a linear one: the source's head conv has no counterpart
    with pytest.raises(InputError, match="layer wall_lumen_head_conv: no matching layer calcium_head_conv"):
        transfer_weights(target, source)
    with pytest.raises(InputError, match="unknown transfer scope 'heads'"):
        transfer_weights(source, target, "heads")
