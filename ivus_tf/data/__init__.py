"""Data: reading records back (`records`) and the tf.data training/evaluation pipelines (`pipeline`)."""

from ivus_tf.data.pipeline import PipelineConfig, Stream, make_eval_dataset, make_train_dataset, train_streams
from ivus_tf.data.records import iterate_frames, parse_frame, record_files

__all__ = [
    "PipelineConfig",
    "Stream",
    "iterate_frames",
    "make_eval_dataset",
    "make_train_dataset",
    "parse_frame",
    "record_files",
    "train_streams",
]
