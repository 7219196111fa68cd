"""Converters of pre-trained weights from other frameworks into Keras files the models load.

`python -m ivus_tf.convert torchvision-deeplabv3 CHECKPOINT.pth --out FILE.keras` (docs/convert.md): torchvision's
DeepLabV3-ResNet50 (e.g. its COCO checkpoint) for `build_model("deeplabv3", ..., backbone_weights=FILE.keras)`.
Needs the optional `convert` extra (torch, torchvision); importing this package does not import torch.
"""
