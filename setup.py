"""ivus-tf: calcium segmentation in intravascular ultrasound with Keras 3 / TensorFlow 2.21."""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "ivus_tf" / "core" / "version.py").read_text()).group(1)

setup(
    name="ivus-tf",
    version=VERSION,
    description="Calcium segmentation in intravascular ultrasound (Bargsten et al. 2021) with Keras 3 / TensorFlow",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ivus_tf", "ivus_tf.*", "tfrecords_builder", "tfrecords_builder.*"]),
    # TensorFlow comes through an extra because the CPU and CUDA builds are different distributions:
    # pip install "ivus-tf[cpu]" or "ivus-tf[gpu]". Not tensorflow-addons (dead), keras-cv or keras-hub.
    install_requires=[
        "keras>=3.15,<3.16",  # the private APIs of ivus_tf.compat are pinned by tests for this range only
        "tensorboard==2.21.*",
        "numpy>=1.26",
        "scipy>=1.11",
        "opencv-python-headless>=4.8",
        "pydicom>=3.0.1",
        # predict --dicom-seg (DICOM Segmentation objects); pulls numpy, pillow, pyjpegls (CharLS wheels),
        # typing-extensions and packaging
        "highdicom>=0.25",
        "matplotlib>=3.8",
        "pyyaml>=6",
        "tqdm>=4.66",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.*"],
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        # ruff pinned to a minor release: its rule sets grow between releases and `make lint` must not break with them
        "test": ["pytest>=8", "ruff>=0.17,<0.18"],
        # python -m ivus_tf.export --format onnx|tensorrt, and ONNX Runtime for predict. TensorRT itself is not
        # here: it needs a CUDA machine (pip install tensorrt-cu12 there).
        "export": ["tf2onnx>=1.16.1", "onnx>=1.17", "onnxruntime>=1.20", "onnxconverter-common>=1.14"],
        # python -m ivus_tf.convert (torchvision's COCO DeepLabV3 -> .keras; docs/convert.md). Install the CPU builds
        # first (PyPI's Linux torch is the CUDA build, several GB): pip install torch torchvision --index-url
        # https://download.pytorch.org/whl/cpu (`make` does; a torch/torchvision pair must match, e.g. 2.13/0.28).
        "convert": ["torch>=2.6", "torchvision>=0.21"],
    },
)
