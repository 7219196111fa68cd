"""Turn annotated IVUS frames into TFRecords keyed by case.

Sources (the phantom generator, the MICCAI 2011 challenge layout) are converted into one canonical form, the
manifest CSV; the TFRecord writer reads only that form. See `python -m tfrecords_builder --help`.
"""

BUILDER_VERSION = 1

from tfrecords_builder.index import read_index  # noqa: E402  (index.py needs BUILDER_VERSION)

__all__ = ["BUILDER_VERSION", "read_index"]
