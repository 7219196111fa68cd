"""Every use of a private Keras or TensorFlow API, in one place, each with the reason and a pinning test.

Keras and TensorFlow may change private names in any minor release; tests/test_compat.py fails for each use
below when the framework changes under it (tested with Keras 3.15 and TensorFlow 2.21, the range setup.py
allows). Everything imports lazily, so a change breaks the feature that needs it, never `import ivus_tf`.

* `scale_loss_for_distribution` (keras.src.losses.loss): `GeneralizedDiceLoss` overrides `Loss.__call__`
  (a loss over the batch cannot use Keras's per-sample weighting) and must still divide by the replicas the
  way Keras's own losses do under `tf.distribute`.
* `build_before_fit` (`Model._symbolic_build`, `Model._maybe_symbolic_build`): under a strategy Keras's `fit`
  pulls a batch through a second iterator to build the metrics, which reshuffles a seeded dataset and fails
  under MultiWorkerMirroredStrategy (keras-team/keras#20585); we build from zeros and skip Keras's build.
* `rank_one_step_logs` (instance `train_step`/`test_step`, `train_function`/`test_function` reset): under
  MultiWorkerMirroredStrategy Keras reduces scalar logs along axis 0 (#20585); the steps return shape [1].
* `onednn_enabled` (tensorflow.python.util._pywrap_util_port): whether TensorFlow's CPU kernels come from
  oneDNN, the only CPU path with a dilated-convolution gradient (`ivus_tf.models.layers.AtrousConv2D`).
* `patch_tf2onnx` (keras.src.export.tf2onnx_lib): tf2onnx 1.17 uses numpy aliases removed in numpy 2; Keras
  ships the patch its own ONNX export applies.
* `save_legacy_h5_weights` (keras.src.legacy.saving.legacy_h5_format): the tests write the legacy
  `resnet50_..._notop.h5` layout that `deeplabv3.load_backbone_weights` must read.

Not private but an undocumented hook, pinned too: `Conv2D.convolution_op`, which `AtrousConv2D` overrides.
"""

from __future__ import annotations


def scale_loss_for_distribution(loss):
    """`loss` divided by the replicas in sync of the current `tf.distribute` strategy (unchanged with one)."""
    from keras.src.losses.loss import scale_loss_for_distribution as scale

    return scale(loss)


def build_before_fit(model, strategy, data_batch) -> None:
    """Build `model` (weights, compiled metrics and loss) from `data_batch` in `strategy`'s scope, and make Keras's
    own pre-`fit` build a no-op so that `fit` iterates the training data once."""
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)
    model._maybe_symbolic_build = lambda *args, **kwargs: None


def rank_one_step_logs(model) -> None:
    """Make `model.train_step`/`test_step` return every log with shape [1] (on this instance only); the cached
    step functions are dropped so `fit` traces the wrapped steps."""
    import tensorflow as tf

    for name in ("train_step", "test_step"):
        step = getattr(type(model), name).__get__(model)

        def rank_one_logs(data, step=step):
            return {key: tf.reshape(value, [1]) for key, value in step(data).items()}

        setattr(model, name, rank_one_logs)
    model.train_function = model.test_function = None


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its CPU kernels through oneDNN (built with it and TF_ENABLE_ONEDNN_OPTS not 0)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def patch_tf2onnx() -> None:
    """Apply Keras's numpy-2 patch to tf2onnx (idempotent)."""
    from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch

    patch()


def save_legacy_h5_weights(model, path) -> None:
    """Write `model`'s weights in the legacy Keras HDF5 layout (`layer_names`, `weight_names` attributes)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
