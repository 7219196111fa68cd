"""The serving graph: raw uint8 frames in, probabilities and masks at the frames' own size out.

    frames uint8 [N, H, W] (or [N, H, W, 1]), any H x W
      -> float32, `tf.image.resize` to the model size S x S (bilinear, half-pixel centres, no antialiasing),
         rounded back to 0..255 and divided by 255: exactly the training pipeline's input
         (`ivus_tf.data.pipeline`, which rounds the resized frame to uint8 before caching it)
      -> the Keras model: {task: softmax [N, S, S, classes]}
      -> each task's probabilities resized back to H x W (bilinear, half-pixel centres), then argmax: the
         convention of `ivus_tf.evaluation`, where Dice and Hausdorff distances are measured

Outputs, only for the tasks the model has (`ivus_tf.export.layout.OUTPUTS`):

    calcium_probability     float32 [N, H, W]     P(calcium) per pixel
    calcium_mask            uint8   [N, H, W]     0/1, argmax of the two calcium classes
    wall_lumen_probability  float32 [N, H, W, 3]  P(background), P(lumen), P(vessel wall)
    wall_lumen_labels       uint8   [N, H, W]     0 background, 1 lumen, 2 vessel wall

`ServingModule` wraps a Keras model in a `tf.Module` holding it ONCE. Keras' `model.export` / `ExportArchive`
stores every variable twice: once as the Keras variables it tracks (`variables`) and once as the `tf.Variable`s
the endpoint captures (`_all_variables`), so a 161 MB DeepLabV3 became a 322 MB SavedModel. Tracking the model as
a child of a plain `tf.Module` saves each `tf.Variable` once, and naming the signature's outputs with a dict
keeps them named (Keras' export returns `output_0`, keras #19771).
"""

from __future__ import annotations

from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.export.layout import INPUT_NAME

tf = import_tensorflow()

FRAMES_SHAPE_ERROR = "frames must be uint8 [N, H, W] or [N, H, W, 1] with N, H, W >= 1"


def serving_outputs(model, frames, image_size: tuple[int, int], tasks) -> dict:
    """The graph of the module docstring for uint8 `frames` [N, H, W] or [N, H, W, 1] (rank checked by caller)."""
    shape = tf.shape(frames)
    n, height, width = shape[0], shape[1], shape[2]
    # Cast before reshaping: TensorRT takes uint8 tensors only as network inputs feeding a cast.
    images = tf.reshape(tf.cast(frames, tf.float32), tf.stack([n, height, width, 1]))
    images = tf.image.resize(images, list(image_size), method="bilinear", antialias=False)
    images = tf.clip_by_value(tf.round(images), 0.0, 255.0) / 255.0
    probabilities = model(images, training=False)
    outputs = {}
    for task in tasks:
        resized = tf.image.resize(tf.cast(probabilities[task], tf.float32), tf.stack([height, width]),
                                  method="bilinear", antialias=False)
        labels = tf.cast(tf.argmax(resized, axis=-1), tf.uint8)
        if task == "calcium":
            outputs["calcium_probability"] = resized[..., 1]
            outputs["calcium_mask"] = labels
        else:
            outputs["wall_lumen_probability"] = resized
            outputs["wall_lumen_labels"] = labels
    return outputs


class ServingModule(tf.Module):
    """A `tf.Module` holding the Keras model once, with the serving function as `serve`.

    `serve` takes frames of unknown rank (TF Serving clients send [N, H, W] or [N, H, W, 1]) and checks it in the
    graph; `serve_nhw()` builds the same graph for rank-3 input only, the form ONNX and TensorRT need (a fixed rank).
    """

    def __init__(self, model, image_size: tuple[int, int], tasks):
        super().__init__(name="ivus_tf_serving")
        self.model = model
        self._image_size = tuple(int(s) for s in image_size)
        self._tasks = tuple(tasks)
        self.serve = tf.function(self._serve, autograph=False,
                                 input_signature=[tf.TensorSpec(None, tf.uint8, name=INPUT_NAME)])

    def _serve(self, frames):
        rank, shape = tf.rank(frames), tf.shape(frames)
        padded = tf.concat([shape, [1, 1, 1, 1]], axis=0)  # so that padded[3] exists for any rank, 0 included
        ok = tf.logical_and(
            tf.logical_or(tf.equal(rank, 3), tf.logical_and(tf.equal(rank, 4), tf.equal(padded[3], 1))),
            tf.reduce_all(padded[:3] >= 1))
        with tf.control_dependencies([tf.debugging.Assert(ok, [FRAMES_SHAPE_ERROR, shape])]):
            frames = tf.identity(frames)
        return serving_outputs(self.model, frames, self._image_size, self._tasks)

    def serve_nhw(self):
        """The rank-3 serving function (built on demand and not an attribute, so a SavedModel does not store it)."""
        return tf.function(lambda frames: serving_outputs(self.model, frames, self._image_size, self._tasks),
                           input_signature=[tf.TensorSpec([None, None, None], tf.uint8, name=INPUT_NAME)],
                           autograph=False)

    def signatures(self) -> dict:
        return {"serving_default": self.serve.get_concrete_function()}
