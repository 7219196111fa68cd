"""ivus-tf: calcium segmentation in intravascular ultrasound (IVUS) with Keras 3 / TensorFlow.

Implements Bargsten et al., "Deep learning for calcium segmentation in intravascular ultrasound images"
(Current Directions in Biomedical Engineering, 2021). Importing this package is cheap: TensorFlow is
imported only by the modules that need it (`ivus_tf.data`, training, export).
"""

from ivus_tf.core.version import __version__

__all__ = ["__version__"]
