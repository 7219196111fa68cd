"""`python -m ivus_tf.convert torchvision-deeplabv3`: logits against torchvision's own model (random weights and
batch-norm statistics, odd non-square inputs), weights-only reading (a malicious pickle runs nothing), one-line key
errors; `build_model(..., backbone_weights=converted.keras)` starting encoder and ASPP from the file; the grid's
coco/imagenet rows named for the file they load.

The torchvision tests need the `convert` extra (CPU torch + torchvision) and skip with the reason without it,
except where IVUS_TF_REQUIRE_TORCH=1 (CI), where they fail.
"""

from __future__ import annotations

import argparse
import os
import pickle
import textwrap

import keras
import numpy as np
import pytest

from ivus_tf.convert.__main__ import describe, main
from ivus_tf.convert.torchvision_deeplabv3 import build_keras_deeplabv3
from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.models import build_model
from ivus_tf.models.layers import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, NaturalImageAdapter
from ivus_tf.models.pretrained import load_pretrained, torchvision_decoder_layers, torchvision_encoder_layers

TOLERANCE = 1e-3
SIZE = 64


# CI sets IVUS_TF_REQUIRE_TORCH=1 (.ci/run): there a missing or broken torch/torchvision fails these tests
# instead of skipping them, so the conversion is really checked against torchvision in CI.
REQUIRED = os.environ.get("IVUS_TF_REQUIRE_TORCH") == "1"


def _torchvision():
    try:
        import torch  # noqa: F401

        from ivus_tf.convert.reference import import_torchvision

        return import_torchvision()
    except ImportError as error:
        if REQUIRED:
            pytest.fail(f"IVUS_TF_REQUIRE_TORCH=1 but torch/torchvision is unusable: {error}")
        pytest.skip(f"the convert extra is not installed or unusable ({error}; CPU torch + torchvision: "
                    "docs/convert.md); `make` installs it")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """torchvision's deeplabv3_resnet50 (21 classes, no aux head), seeded, with random batch-norm statistics and
    affine parameters (so batch norm is really compared), saved as a state dict: (path, torch model in eval)."""
    torchvision = _torchvision()
    import torch

    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21,
                                                               aux_loss=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    path = tmp_path_factory.mktemp("torchvision") / "deeplabv3_resnet50_random.pth"
    torch.save(model.state_dict(), path)
    return path, model.eval()


@pytest.fixture(scope="module")
def converted(checkpoint, tmp_path_factory):
    from ivus_tf.convert.torchvision_deeplabv3 import convert_torchvision_deeplabv3

    out = tmp_path_factory.mktemp("converted") / "deeplabv3_random.keras"
    return out, convert_torchvision_deeplabv3(checkpoint[0], out)


@pytest.fixture(scope="module")
def loaded(converted):
    """The written file, loaded afresh in safe mode."""
    return keras.saving.load_model(converted[0], safe_mode=True)


def torch_logits(model, x_nhwc):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()))["out"].numpy().transpose(0, 2, 3, 1)


@pytest.mark.slow
def test_keras_logits_equal_torchvision_logits(checkpoint, converted, loaded):
    # NHWC, odd, non-square, not multiples of 8. Stride-4 maps 25x33 and 17x12: on the even 12 Keras' "same"
    # padding of the stride-2 3x3 convolution would differ from PyTorch's (measured: 0.086); on odd sizes it would
    # not. Both sizes need a non-integer bilinear upsampling of the logits.
    for seed, shape in enumerate([(1, 97, 130, 3), (2, 65, 47, 3)]):
        x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
        expected = torch_logits(checkpoint[1], x)
        assert expected.shape == shape[:3] + (21,) and expected.std() > 0.1  # not a trivially small output
        difference = np.abs(keras.ops.convert_to_numpy(loaded(x)) - expected).max()
        print(f"max |Keras - torchvision| logit, input {shape}: {difference:.2e}")
        assert difference < TOLERANCE
    info = converted[1]
    assert info["max_abs_logit_difference"] < TOLERANCE and info["reload_max_abs_difference"] == 0.0
    assert info["parameters"] == sum(p.numel() for p in checkpoint[1].parameters())
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)
    lines = describe(info)
    assert any("checked against torchvision" in line for line in lines)
    assert lines[-1].startswith(f"wrote {converted[0]}")


def _evil_payload(marker):
    class Evil:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    return Evil()


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    _torchvision()
    import torch

    marker = tmp_path / "pwned.txt"
    zipped, raw = tmp_path / "evil_zip.pth", tmp_path / "evil_raw.pth"
    torch.save({"model": _evil_payload(marker)}, zipped)  # torch's zip format
    raw.write_bytes(pickle.dumps(_evil_payload(marker), protocol=2))  # a bare (legacy) pickle
    out = tmp_path / "out.keras"
    for path in (zipped, raw):
        assert run_cli(main, ["torchvision-deeplabv3", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {path}: refused by torch.load(weights_only=True)")
        assert not marker.exists() and not out.exists()
    torch.load(zipped, weights_only=False)  # the files are really dangerous: an unrestricted load runs them
    assert marker.read_text() == "ran"
    marker.unlink()
    pickle.loads(raw.read_bytes())
    assert marker.exists()


def test_checkpoint_containers(tmp_path, checkpoint):
    import torch

    from ivus_tf.convert.checkpoint import read_state_dict

    state = torch.load(checkpoint[0], weights_only=True)
    wrapped = tmp_path / "training_checkpoint.pth"  # torchvision's reference scripts: model, optimizer, args, epoch
    torch.save({"model": state, "args": argparse.Namespace(lr=0.02), "epoch": 29}, wrapped)
    read = read_state_dict(wrapped)
    assert set(read) == set(state)
    np.testing.assert_array_equal(read["classifier.4.bias"], state["classifier.4.bias"].numpy())
    for bad, message in (([torch.zeros(2)], "not a state dict"), ({"model": {"a": 1}}, "not a state dict")):
        torch.save(bad, tmp_path / "bad.pth")
        with pytest.raises(InputError, match=f"{tmp_path / 'bad.pth'}: {message}"):
            read_state_dict(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(InputError, match="junk.pth: refused by torch.load"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(InputError, match="missing.pth: no such file"):
        read_state_dict(tmp_path / "missing.pth")


@pytest.mark.slow
def test_missing_unexpected_and_misshapen_keys_are_one_line(tmp_path, capsys, checkpoint, loaded):
    import torch

    from ivus_tf.convert.checkpoint import read_state_dict
    from ivus_tf.convert.torchvision_deeplabv3 import assign_state_dict

    state = torch.load(checkpoint[0], weights_only=True)
    key = "backbone.layer3.2.bn2.running_var"
    del state[key]
    path, out = tmp_path / "incomplete.pth", tmp_path / "out.keras"
    torch.save(state, path)
    assert run_cli(main, ["torchvision-deeplabv3", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: missing key {key!r} (torchvision's deeplabv3_resnet50 has it)\n"
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))

    model = loaded
    full = read_state_dict(checkpoint[0])
    extra = {**full, "backbone.layer3.6.conv1.weight": full["backbone.layer3.5.conv1.weight"]}  # a ResNet101 block
    with pytest.raises(InputError, match=r"x.pth: unexpected key 'backbone.layer3.6.conv1.weight'"):
        assign_state_dict(model, extra, "x.pth")
    misshapen = {**full, "classifier.1.weight": full["classifier.1.weight"][:, :, :1, :1]}
    with pytest.raises(InputError, match=r"key 'classifier.1.weight' has shape \(256, 256, 1, 1\), expected "
                                         r"\(256, 256, 3, 3\)"):
        assign_state_dict(model, misshapen, "x.pth")
    aux = {**full, "aux_classifier.0.weight": np.zeros((256, 1024, 3, 3), np.float32)}  # COCO files have one
    assert assign_state_dict(model, aux, "x.pth") == len(model.weights)


def test_resize_to_match_is_pytorch_bilinear_without_align_corners():
    """By hand: source coordinate (i + 0.5) * in / out - 0.5, clamped at 0, upper neighbour clamped at in - 1."""
    from ivus_tf.models.layers import ResizeToMatch

    row = np.arange(5, dtype=np.float32).reshape(1, 1, 5, 1)  # values 0..4 along the width
    image = keras.Input((None, None, 1))
    reference = keras.Input((None, None, 2))
    model = keras.Model([image, reference], ResizeToMatch()([image, reference]))
    up = keras.ops.convert_to_numpy(model([row[..., :2, :], np.zeros((1, 3, 4, 2), np.float32)]))  # 1x2 -> 3x4
    np.testing.assert_allclose(up[0, :, :, 0], [[0, 0.25, 0.75, 1]] * 3, atol=1e-6)
    down = keras.ops.convert_to_numpy(model([row, np.zeros((1, 1, 3, 2), np.float32)]))  # 5 -> 3: ratio 5/3
    np.testing.assert_allclose(down[0, 0, :, 0], [1 / 3, 2, 11 / 3], atol=1e-5)


# ----------------------------------------------------------------------------------- build_model from a file
# These need no torch: the file is the converter's Keras network with random weights, written the same way.

@pytest.fixture(scope="module")
def converted_file(tmp_path_factory):
    model = build_keras_deeplabv3(21)
    rng = np.random.default_rng(7)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if len(shape) == 4:  # a kernel, He-scaled so the features stay finite
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:3])), shape)
        elif "variance" in weight.path or "gamma" in weight.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.uniform(-0.1, 0.1, shape)
        weight.assign(value.astype(np.float32))
    path = tmp_path_factory.mktemp("conversion") / "deeplabv3_coco.keras"
    model.save(path)
    return path


@pytest.mark.slow
def test_build_model_starts_encoder_and_aspp_from_the_conversion(converted_file):
    reference = load_pretrained(converted_file)[1]  # the file loaded in safe mode, as build_model loads it
    model = build_model("deeplabv3", ("calcium", "wall_lumen"), input_shape=(SIZE, SIZE, 1), head="decoder",
                        backbone_weights=converted_file)
    encoder = model.get_layer("encoder")
    compared = 0
    for layer in torchvision_encoder_layers(reference):
        for ours, theirs in zip(encoder.get_layer(layer.name).weights, layer.weights, strict=True):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
            compared += 1
    for layer in torchvision_decoder_layers(reference):
        for task in ("calcium", "wall_lumen"):  # each task's own ASPP starts from the file
            target = model.get_layer(f"{task}_{layer.name}")
            for ours, theirs in zip(target.weights, layer.weights, strict=True):
                np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        compared += len(layer.weights)
    assert compared == len(reference.weights) - 2  # all but the 21-class classifier's kernel and bias
    assert model.get_layer("calcium_decoder_aspp_atrous3_conv").dilation_rate == (36, 36)
    assert encoder.get_layer("conv1_conv").bias is None  # torchvision's variant: bias-free convolutions

    # gray [0, 1] -> (gray - ImageNet mean) / std in 3 channels -> the converted encoder's features
    adapter = encoder.get_layer("input_adapter")
    assert isinstance(adapter, NaturalImageAdapter) and adapter.scale == 1.0
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 1), dtype=np.float32)
    rgb = (np.repeat(x, 3, axis=-1) - np.array(IMAGENET_MEAN_RGB)) / np.array(IMAGENET_STD_RGB)
    ours = keras.ops.convert_to_numpy(encoder(x)["stride_8"])
    theirs = keras.ops.convert_to_numpy(reference.get_layer("encoder")(rgb.astype(np.float32))["stride_8"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())

    with pytest.raises(InputError, match="weights of the 'torchvision' variant, but variant 'keras'"):
        build_model("deeplabv3", ("calcium",), input_shape=(SIZE, SIZE, 1), backbone_weights=converted_file,
                    variant="keras")


@pytest.mark.slow
def test_grid_rows_are_named_for_the_file_they_load(tmp_path, converted_file):
    from ivus_tf.core.vocab import BACKBONES
    from ivus_tf.grid.config import BACKBONE_WEIGHTS, check_backbone_files, expand_grid, load_grid_config

    assert set(BACKBONE_WEIGHTS) == set(BACKBONES) - {"none"}

    resnet50 = tmp_path / "resnet50_imagenet.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3)).save_weights(resnet50)
    grid_text = textwrap.dedent(f"""\
        archs: [deeplabv3]
        schemes: [calcium]
        repeats: 1
        folds: 1
        coco_backbone_weights: {converted_file}
        imagenet_backbone_weights: {resnet50.name}
    """)
    (tmp_path / "grid.yaml").write_text(grid_text)
    grid, base = load_grid_config(tmp_path / "grid.yaml")
    check_backbone_files(grid)
    runs = {run.run_id: run for run in expand_grid(grid, base, tmp_path / "G")}
    assert set(runs) == {"deeplabv3-calcium-r0-f0", "deeplabv3-imagenet-calcium-r0-f0",
                         "deeplabv3-coco-calcium-r0-f0"}
    assert runs["deeplabv3-coco-calcium-r0-f0"].backbone == "coco"
    assert runs["deeplabv3-coco-calcium-r0-f0"].config.backbone_weights == str(converted_file)
    assert runs["deeplabv3-imagenet-calcium-r0-f0"].config.backbone_weights == str(resnet50)

    swapped = grid_text.replace(f"coco_backbone_weights: {converted_file}", f"imagenet_backbone_weights: "
                                f"{converted_file}").replace(f"imagenet_backbone_weights: {resnet50.name}",
                                                             f"coco_backbone_weights: {resnet50.name}")
    (tmp_path / "swapped.yaml").write_text(swapped)
    grid, _ = load_grid_config(tmp_path / "swapped.yaml")
    with pytest.raises(InputError, match=r"imagenet_backbone_weights .*deeplabv3_coco.keras: a torchvision "
                                         r"DeepLabV3 conversion .* list it under coco_backbone_weights"):
        check_backbone_files(grid)
    grid = type(grid)(coco_backbone_weights=str(resnet50))
    with pytest.raises(InputError, match=r"coco_backbone_weights .*resnet50_imagenet.weights.h5: "
                                         r"keras.applications.ResNet50 \(ImageNet\) weights, not a torchvision"):
        check_backbone_files(grid)
