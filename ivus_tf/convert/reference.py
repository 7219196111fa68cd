"""torchvision itself as the reference a conversion is checked against.

`torchvision_logits(state, x)` loads the state dict into torchvision's own `deeplabv3_resnet50` (strictly: every
key must fit) and returns `model.eval()(x)["out"]` as NHWC numpy; `max_logit_difference` compares it with the
Keras model on the same input.

`import_torchvision` also works where pip paired a CPU build of torch with PyPI's (CUDA-built) torchvision: that
torchvision cannot load its C++ operators (detection ops such as NMS; DeepLabV3 uses none of them), and its import
then stops at registering a fake kernel for the operator schemas `torchvision::nms` / `qnms` it failed to load.
Declaring those two schemas lets the import finish; calling them would still fail, as without them.
"""

from __future__ import annotations

import numpy as np

from ivus_tf.convert.checkpoint import import_torch

# Schemas of the operators torchvision's import registers fake kernels for without checking they were loaded.
_UNGUARDED_OPS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                  "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_declared = []  # keeps the torch.library.Library alive (dropping it removes the schemas)


def import_torchvision():
    """torchvision, or ImportError with the reason."""
    torch = import_torch()
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::" not in str(error) or _declared:
            raise ImportError(f"torchvision does not import: {error}") from error
        library = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - schemas only, see module docstring
        for schema in _UNGUARDED_OPS:
            library.define(schema)
        _declared.append(library)
        import torchvision
    return torchvision


def torchvision_model(state: dict[str, np.ndarray]):
    """torchvision's deeplabv3_resnet50 with `state` loaded strictly (aux head built if `state` has one), eval."""
    torch = import_torch()
    segmentation = import_torchvision().models.segmentation
    num_classes = int(state["classifier.4.weight"].shape[0])
    aux = any(name.startswith("aux_classifier.") for name in state)
    model = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes,
                                            aux_loss=aux)
    model.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in state.items()}, strict=True)
    return model.eval()


def torchvision_logits(model, x_nhwc: np.ndarray) -> np.ndarray:
    """`model(x)["out"]` of NHWC float input, as NHWC float32 numpy."""
    torch = import_torch()
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))["out"]
    return out.numpy().transpose(0, 2, 3, 1)


def keras_logits(model, x_nhwc: np.ndarray) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(model(x_nhwc, training=False))


def max_logit_difference(keras_model, state: dict[str, np.ndarray], x_nhwc: np.ndarray) -> float:
    """max |Keras - torchvision| over the logits of `x_nhwc` (NHWC float32 RGB)."""
    expected = torchvision_logits(torchvision_model(state), x_nhwc)
    return float(np.max(np.abs(keras_logits(keras_model, x_nhwc) - expected)))
