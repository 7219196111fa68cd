"""Turn annotated IVUS frames into TFRecords keyed by case.

Sources (the phantom generator, the MICCAI 2011 challenge layout) are converted into one canonical form, the
manifest CSV; the TFRecord writer reads only that form. See `python -m tfrecords_builder --help`. From `ivus_tf`
this package imports only `ivus_tf.core`.
"""

from tfrecords_builder.index import BUILDER_VERSION, read_index

__all__ = ["BUILDER_VERSION", "read_index"]
