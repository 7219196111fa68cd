"""Segmentation models: U-Net with residual blocks and DeepLabV3-ResNet50 (output stride 8), shared encoder,
one head per task. See `ivus_tf.models.build` for the structure and head options."""

from ivus_tf.models.build import ARCHITECTURES, build_model, transfer_encoder_weights, transfer_weights

__all__ = ["ARCHITECTURES", "build_model", "transfer_encoder_weights", "transfer_weights"]
