"""tf.data pipelines for training and evaluation, built from a records folder and a list of case ids.

Explicit train and eval branches (the Model Garden decoder/parser split) over the frames that carry a label of a
configured task, decoded, resized to S x S (image bilinear, masks nearest) and cached in memory. Elements are
`(image float32 [B,S,S,1] in [0,1], targets {task: int32 [B,S,S]}, sample_weights {task: float32 [B]})`; targets:
calcium 0/1, wall_lumen 0 background / 1 lumen / 2 vessel wall. A sample weight is 1 where the frame carries that
task's label, else 0 (its all-zero target must not count). The weights stay [B], so losses must be per frame ([B]);
reshaping them to [B,1,1] would silently break per-frame losses. Streams, batch mixing and determinism:
docs/data.md#the-training-input-pipeline.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ivus_tf.augment_config import AugmentConfig
from ivus_tf.core.errors import InputError
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.core.vocab import NUM_CLASSES, TASKS, check_tasks
from ivus_tf.data.augment import augment_batch
from ivus_tf.data.records import parse_frame, record_files
from tfrecords_builder import features as F

tf = import_tensorflow()
AUTOTUNE = tf.data.AUTOTUNE
_PRESENT_KEYS = {task: F.MASK_KEYS[task][1] for task in TASKS}


@dataclasses.dataclass(frozen=True)
class PipelineConfig(AugmentConfig):
    """Input pipeline settings (flat; load with `ivus_tf.core.config.from_mapping`/`load_yaml`, which call
    `validate`).

    `calcium_fraction`: share of each multi-task training batch drawn from calcium-labelled frames, rounded half up.
    `shuffle_buffer`: per stream, capped at its frame count (0 or 1: no shuffling). The `aug_*` fields
    (`AugmentConfig`) apply to training batches only.
    """

    image_size: int = 256
    batch_size: int = 12
    tasks: tuple[str, ...] = TASKS
    calcium_fraction: float = 0.5
    flip: bool = True
    rotate: bool = True
    shuffle_buffer: int = 1024
    cache: bool = True
    seed: int = 0

    def validate(self, source: str = "pipeline config") -> None:
        """Raise `InputError` naming the field when a value is out of range or a task is unknown."""
        if self.image_size < 2:
            raise InputError(f"{source}: image_size must be >= 2, got {self.image_size}")
        if self.batch_size < 1:
            raise InputError(f"{source}: batch_size must be >= 1, got {self.batch_size}")
        check_tasks(self.tasks, source)
        if not 0.0 <= self.calcium_fraction <= 1.0:
            raise InputError(f"{source}: calcium_fraction must be in [0, 1], got {self.calcium_fraction}")
        if self.shuffle_buffer < 0:
            raise InputError(f"{source}: shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"{source}: seed must be a non-negative 64-bit integer, got {self.seed}")
        AugmentConfig.validate(self, source)

    def calcium_frames_per_batch(self) -> int:
        """round(calcium_fraction * batch_size), halves rounded up."""
        return int(math.floor(self.calcium_fraction * self.batch_size + 0.5))


@dataclasses.dataclass(frozen=True)
class Stream:
    """Frames that carry a label of a task in `any_of` and none in `none_of`; `per_batch` of them per batch."""

    name: str
    any_of: tuple[str, ...]
    none_of: tuple[str, ...]
    frames: int
    per_batch: int

    def selects(self, present: dict) -> np.ndarray | tf.Tensor:
        """Boolean selection from {task: flag}, for numpy arrays or tensors alike."""
        chosen = present[self.any_of[0]] > 0
        for task in self.any_of[1:]:
            chosen = chosen | (present[task] > 0)
        for task in self.none_of:
            chosen = chosen & (present[task] <= 0)
        return chosen


def _present_flags(serialized: tf.Tensor) -> dict:
    """{task: int64 flag} of serialized record(s): parses only the two flags, not the PNGs."""
    spec = {key: tf.io.FixedLenFeature([], tf.int64) for key in _PRESENT_KEYS.values()}
    parse = tf.io.parse_single_example if serialized.shape.rank == 0 else tf.io.parse_example
    parsed = parse(serialized, spec)
    return {task: parsed[key] for task, key in _PRESENT_KEYS.items()}


def _scan(records_dir: str | Path, case_ids: Iterable[str]) -> tuple[list[str], dict]:
    """Record files of the cases and {task: bool [N]} label flags of all their frames (one cheap pass)."""
    case_ids = list(case_ids)
    if not case_ids:
        raise InputError(f"{records_dir}: empty case list; pass at least one case id")
    files = record_files(records_dir, case_ids)
    flags = {task: [] for task in TASKS}
    for batch in tf.data.TFRecordDataset(files).batch(4096).map(_present_flags).as_numpy_iterator():
        for task in TASKS:
            flags[task].append(batch[task] > 0)
    return files, {task: np.concatenate(parts) if parts else np.zeros(0, bool) for task, parts in flags.items()}


def _cases_text(case_ids: Sequence[str]) -> str:
    shown = ", ".join(map(repr, case_ids[:5]))
    return shown + (f" and {len(case_ids) - 5} more" if len(case_ids) > 5 else "")


def train_streams(records_dir: str | Path, case_ids: Iterable[str], config: PipelineConfig) -> list[Stream]:
    """The label streams a training batch is drawn from, with frame counts and frames per batch.

    Raises `InputError` when a configured task has no labelled frame among the cases (its head would never learn).
    """
    config.validate()
    case_ids = list(case_ids)
    return _train_streams(records_dir, case_ids, config, _scan(records_dir, case_ids)[1])


def _train_streams(records_dir, case_ids: list[str], config: PipelineConfig, flags: dict) -> list[Stream]:
    total = len(next(iter(flags.values())))
    for task in config.tasks:
        if not flags[task].any():
            raise InputError(f"{records_dir}: none of the {total} frames of case(s) {_cases_text(case_ids)} carries "
                             f"a {task} label; drop {task!r} from tasks or choose other cases")

    def stream(name, any_of, none_of, per_batch):
        found = Stream(name, any_of, none_of, 0, per_batch)
        return dataclasses.replace(found, frames=int(found.selects(flags).sum()))

    batch = config.batch_size
    if len(config.tasks) == 1:
        return [stream(config.tasks[0], config.tasks, (), batch)]
    calcium = stream("calcium", ("calcium",), (), config.calcium_frames_per_batch())
    wall_lumen = stream("wall_lumen_only", ("wall_lumen",), ("calcium",), batch - calcium.per_batch)
    if wall_lumen.frames == 0 or wall_lumen.per_batch == 0:
        return [dataclasses.replace(calcium, per_batch=batch)]
    if calcium.per_batch == 0:
        return [wall_lumen]
    return [calcium, wall_lumen]


def _bit_fields(tasks: Sequence[str]) -> list[tuple[int, int]]:
    """(shift, bit mask) of each task's labels in the packed label code: calcium bit 0, wall_lumen bits 1-2."""
    fields, shift = [], 0
    for task in tasks:
        bits = (NUM_CLASSES[task] - 1).bit_length()
        fields.append((shift, (1 << bits) - 1))
        shift += bits
    return fields


def pack_masks(masks: dict, tasks: Sequence[str]) -> tf.Tensor:
    """One uint8 label code from {task: uint8 mask}: calcium | wall_lumen << 1 when both tasks are configured.

    The masks then travel through resize, cache and warp as one channel, which is cheaper on CPU than two. Labels are
    clipped to their task's class count first so a stray value can never leak into another task's bits.
    """
    code = None
    for task, (shift, _) in zip(tasks, _bit_fields(tasks)):
        field = tf.minimum(masks[task], NUM_CLASSES[task] - 1) * (1 << shift)
        code = field if code is None else code + field
    return code


def unpack_masks(code: tf.Tensor, tasks: Sequence[str]) -> dict:
    """{task: int32 labels} from a uint8 label code made by `pack_masks`."""
    labels = {}
    for task, (shift, mask) in zip(tasks, _bit_fields(tasks)):
        field = tf.bitwise.right_shift(code, tf.constant(shift, code.dtype)) if shift else code
        labels[task] = tf.cast(tf.bitwise.bitwise_and(field, tf.constant(mask, code.dtype)), tf.int32)
    return labels


def _frames(files: list[str], stream: Stream, config: PipelineConfig, with_metadata: bool) -> tf.data.Dataset:
    """Selected frames, decoded and resized to S x S, in stored order; cached when `config.cache`.

    Element: {"image": uint8 [S,S,1], "labels": uint8 [S,S,1] (`pack_masks` bit fields), "labelled": float32 [T]}
    (T = configured tasks, in config order), plus "metadata" when asked. The image is rounded back to uint8 after
    resizing (a 4x smaller cache; the error is below the PNG's own quantisation).
    """
    size = [config.image_size, config.image_size]

    def decode(serialized):
        frame = parse_frame(serialized)
        image = tf.image.resize(frame["image"], size, method="bilinear")
        labels = pack_masks({task: frame[f"{task}_mask"] for task in config.tasks}, config.tasks)
        element = {
            "image": tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8),
            "labels": tf.image.resize(labels, size, method="nearest"),
            "labelled": tf.stack([frame[f"has_{task}"] for task in config.tasks]),
        }
        if with_metadata:
            element["metadata"] = {"case_id": frame["case_id"], "frame_id": frame["frame_id"]}
        return element

    dataset = tf.data.TFRecordDataset(files).filter(lambda s: stream.selects(_present_flags(s)))
    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.cache() if config.cache else dataset


def _model_batch(batch: dict, config: PipelineConfig, seed: tf.Tensor | None = None) -> tuple:
    """(image, targets, sample_weights[, metadata]) of a batch of `_frames` elements; augmented when `seed`."""
    images = tf.cast(batch["image"], tf.float32) / 255.0
    labels = batch["labels"]
    if seed is not None:
        images, labels = augment_batch(images, labels, seed, flip=config.flip, rotate=config.rotate, augment=config)
    targets = unpack_masks(labels[..., 0], config.tasks)
    weights = {task: batch["labelled"][:, i] for i, task in enumerate(config.tasks)}
    if "metadata" in batch:
        return images, targets, weights, batch["metadata"]
    return images, targets, weights


def make_train_dataset(
    records_dir: str | Path, case_ids: Iterable[str], config: PipelineConfig | None = None
) -> tf.data.Dataset:
    """Infinite, shuffled, augmented batches (static batch size) of `(image, targets, sample_weights)`."""
    config = PipelineConfig() if config is None else config
    config.validate()
    case_ids = list(case_ids)
    files, flags = _scan(records_dir, case_ids)
    parts = []
    for i, stream in enumerate(_train_streams(records_dir, case_ids, config, flags)):
        dataset = _frames(files, stream, config, with_metadata=False)
        buffer = min(config.shuffle_buffer, stream.frames)
        if buffer > 1:
            dataset = dataset.shuffle(buffer, seed=2 * config.seed + i, reshuffle_each_iteration=True)
        parts.append(dataset.repeat().batch(stream.per_batch, drop_remainder=True))
    if len(parts) == 1:
        batches = parts[0]
    else:
        batches = tf.data.Dataset.zip(tuple(parts)).map(
            lambda *streams: tf.nest.map_structure(lambda *xs: tf.concat(xs, axis=0), *streams)
        )
    seed = tf.constant(config.seed, tf.int64)
    batches = tf.data.Dataset.zip((batches, tf.data.Dataset.counter()))
    batches = batches.map(
        lambda batch, step: _model_batch(batch, config, tf.stack([seed, step])),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return batches.prefetch(AUTOTUNE)


def make_eval_dataset(
    records_dir: str | Path,
    case_ids: Iterable[str],
    config: PipelineConfig | None = None,
    with_metadata: bool = False,
) -> tf.data.Dataset:
    """Finite batches in stored order, no augmentation, last partial batch kept; every frame carrying a label of a
    configured task appears exactly once. With `with_metadata`, a 4th element holds per-frame metadata."""
    config = PipelineConfig() if config is None else config
    config.validate()
    case_ids = list(case_ids)
    files, flags = _scan(records_dir, case_ids)
    stream = Stream("eval", tuple(config.tasks), (), 0, config.batch_size)
    if not stream.selects(flags).any():
        raise InputError(f"{records_dir}: none of the {len(flags['calcium'])} frames of case(s) "
                         f"{_cases_text(case_ids)} carries a {' or '.join(config.tasks)} label")
    dataset = _frames(files, stream, config, with_metadata).batch(config.batch_size)
    # The filter hides the length from tf.data; stating it lets Keras size progress bars and epochs.
    frames = int(stream.selects(flags).sum())
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-frames // config.batch_size)))
    dataset = dataset.map(lambda batch: _model_batch(batch, config), num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.prefetch(AUTOTUNE)
