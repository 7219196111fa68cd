"""Tests of the tf.data pipelines (`ivus_tf.data.pipeline`) and batch augmentation (`ivus_tf.data.augment`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ivus_tf.core.config import from_mapping
from ivus_tf.core.errors import InputError
from ivus_tf.data import iterate_frames
from ivus_tf.data.augment import augment_batch, transform_batch
from ivus_tf.data.pipeline import (
    PipelineConfig,
    make_eval_dataset,
    make_train_dataset,
    pack_masks,
    train_streams,
    unpack_masks,
)

BOTH = ("calcium", "wall_lumen")
SMALL = dict(image_size=32, batch_size=4)


def _batches(dataset, n):
    """First n batches as numpy; checks the per-frame sample weights are float32 [B]."""
    batches = [tuple(_numpy(part) for part in batch) for batch in dataset.take(n)]
    for batch in batches:
        assert all(w.shape == (len(batch[0]),) and w.dtype == np.float32 for w in batch[2].values())
    return batches


def _numpy(part):
    return {k: v.numpy() for k, v in part.items()} if isinstance(part, dict) else part.numpy()


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "values, words",
    [
        ({"tasks": ["calcium", "lumen"]}, "unknown task(s) 'lumen'; valid: calcium, wall_lumen"),
        ({"tasks": []}, "tasks is empty"),
        ({"tasks": ["calcium", "calcium"]}, "twice"),
        ({"calcium_fraction": 1.5}, "calcium_fraction must be in [0, 1]"),
        ({"calcium_fraction": -0.1}, "calcium_fraction must be in [0, 1]"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"image_size": 0}, "image_size must be >= 2"),
        ({"shuffle_buffer": -1}, "shuffle_buffer must be >= 0"),
    ],
)
def test_bad_config_is_one_line_input_error(values, words):
    with pytest.raises(InputError) as error:
        from_mapping(PipelineConfig, values, "train.yaml")
    assert words in str(error.value) and str(error.value).startswith("train.yaml: ")
    assert "\n" not in str(error.value)


def test_config_from_mapping_and_rounding():
    config = from_mapping(PipelineConfig, {"tasks": ["calcium"], "batch_size": 5, "calcium_fraction": 0.5})
    assert config.tasks == ("calcium",) and config.calcium_frames_per_batch() == 3
    assert PipelineConfig().calcium_frames_per_batch() == 6


def test_bad_case_lists(make_records):
    records = make_records({"a": [(0, ("wall_lumen",)), (1, ())], "b": [(0, BOTH)]})
    with pytest.raises(InputError, match="empty case list"):
        make_train_dataset(records, [], PipelineConfig(**SMALL))
    with pytest.raises(InputError, match="unknown case id"):
        make_eval_dataset(records, ["zz"], PipelineConfig(**SMALL))
    calcium_only = PipelineConfig(tasks=("calcium",), **SMALL)
    for make in (make_train_dataset, make_eval_dataset):
        with pytest.raises(InputError, match=r"none of the 2 frames of case\(s\) 'a' carries a calcium label"):
            make(records, ["a"], calcium_only)
    with pytest.raises(InputError, match="carries a calcium label; drop 'calcium' from tasks"):
        make_train_dataset(records, ["a"], PipelineConfig(**SMALL))


@pytest.mark.parametrize("tasks", [BOTH, ("wall_lumen", "calcium"), ("calcium",), ("wall_lumen",)])
def test_label_code_round_trip(tasks):
    calcium, wall_lumen = np.meshgrid(np.arange(2, dtype=np.uint8), np.arange(3, dtype=np.uint8))
    masks = {"calcium": calcium, "wall_lumen": wall_lumen}
    code = pack_masks(masks, tasks)
    assert code.dtype == np.uint8 and int(np.max(code)) < 8
    labels = unpack_masks(code, tasks)
    assert list(labels) == list(tasks)
    for task in tasks:
        np.testing.assert_array_equal(labels[task], masks[task])


# ---------------------------------------------------------------- eval branch


def test_eval_order_coverage_and_metadata(make_records):
    records = make_records({
        "b": [(0, BOTH), (1, ()), (2, ("calcium",)), (3, ("wall_lumen",)), (4, BOTH)],
        "a": [(0, ("calcium",)), (1, ("wall_lumen",))],
    })
    dataset = make_eval_dataset(records, ["b", "a"], PipelineConfig(**SMALL), with_metadata=True)
    assert dataset.cardinality().numpy() == 2
    runs = [_batches(dataset, -1) for _ in range(2)]
    assert [len(batch[0]) for batch in runs[0]] == [4, 2]  # remainder batch kept
    frames = [(c.decode(), f.decode()) for batch in runs[0]
              for c, f in zip(batch[3]["case_id"], batch[3]["frame_id"])]
    assert frames == [("b", "0"), ("b", "2"), ("b", "3"), ("b", "4"), ("a", "0"), ("a", "1")]  # ("b", "1") has no label
    for first, second in zip(*runs):
        for part_a, part_b in zip(first, second):
            for x, y in zip(*(p.values() if isinstance(p, dict) else [p] for p in (part_a, part_b))):
                np.testing.assert_array_equal(x, y)
    image, targets, weights, metadata = runs[0][0]
    assert image.dtype == np.float32 and image.shape == (4, 32, 32, 1) and 0 <= image.min() <= image.max() <= 1
    assert {k: v.dtype for k, v in targets.items()} == {"calcium": np.int32, "wall_lumen": np.int32}
    np.testing.assert_array_equal(weights["calcium"], [1, 1, 0, 1])
    np.testing.assert_array_equal(weights["wall_lumen"], [1, 0, 1, 1])
    assert not targets["calcium"][2].any() and not targets["wall_lumen"][1].any()
    assert set(metadata) == {"case_id", "frame_id"}


def test_eval_resize_bilinear_image_nearest_masks(make_records):
    records = make_records({"a": [(i, BOTH) for i in range(3)]})
    frames = list(iterate_frames(records))
    (image, targets, _), = _batches(make_eval_dataset(records, ["a"], PipelineConfig(**SMALL)), -1)
    for i, frame in enumerate(frames):
        # Halving with half-pixel centres: bilinear averages each 2x2 block, nearest takes its bottom-right pixel.
        blocks = frame["image"].astype(np.float64).reshape(32, 2, 32, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(image[i, ..., 0] * 255, np.round(blocks), atol=1.01)
        np.testing.assert_array_equal(targets["calcium"][i], frame["calcium_mask"][1::2, 1::2])
        np.testing.assert_array_equal(targets["wall_lumen"][i], frame["wall_lumen_mask"][1::2, 1::2])
    (image, targets, _), = _batches(make_eval_dataset(records, ["a"], PipelineConfig(image_size=64)), -1)
    np.testing.assert_array_equal(np.round(image[..., 0] * 255), [f["image"] for f in frames])
    np.testing.assert_array_equal(targets["wall_lumen"], [f["wall_lumen_mask"] for f in frames])
    (_, targets, _), = _batches(make_eval_dataset(records, ["a"], PipelineConfig(image_size=45)), -1)
    assert set(np.unique(targets["wall_lumen"])) == {0, 1, 2} and set(np.unique(targets["calcium"])) <= {0, 1}


# ---------------------------------------------------------------- augmentation


def test_quarter_turns_and_flips_match_numpy_exactly():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    mask = rng.integers(0, 3, (32, 32)).astype(np.uint8)
    combos = list(itertools.product(range(4), (False, True), (False, True)))
    images, masks = transform_batch(
        np.repeat(image[None, ..., None], len(combos), 0),
        np.stack([np.stack([mask, mask[::-1]], -1)] * len(combos)),
        np.array([k * np.pi / 2 for k, _, _ in combos], np.float32),
        np.array([h for _, h, _ in combos]),
        np.array([v for _, _, v in combos]),
    )
    for i, (k, horizontal, vertical) in enumerate(combos):
        def expected(array, k=k, horizontal=horizontal, vertical=vertical):
            array = np.flip(array, 1) if horizontal else array
            return np.rot90(np.flip(array, 0) if vertical else array, k)

        np.testing.assert_array_equal(images[i, ..., 0], expected(image), err_msg=str(combos[i]))
        np.testing.assert_array_equal(masks[i, ..., 0], expected(mask), err_msg=str(combos[i]))
        np.testing.assert_array_equal(masks[i, ..., 1], expected(mask[::-1]), err_msg=str(combos[i]))


def test_random_rotation_moves_image_and_masks_together():
    size = 48
    yy, xx = np.mgrid[:size, :size]
    mask = ((np.abs(yy - 14) < 6) & (xx > 8) & (xx < 40) | (np.hypot(yy - 32, xx - 30) < 7)).astype(np.uint8)
    images = np.repeat((0.8 * mask)[None, ..., None], 8, 0).astype(np.float32)
    masks = np.repeat(mask[None, ..., None], 8, 0)
    out_images, out_masks = (t.numpy() for t in augment_batch(images, masks, np.array([3, 4])))
    assert set(np.unique(out_masks)) <= {0, 1}
    for image, out_mask in zip(out_images[..., 0], out_masks[..., 0]):
        assert not np.array_equal(out_mask, mask)  # it did move
        padded = np.pad(out_mask, 1, mode="edge")
        neighbours = np.stack([padded[dy:dy + size, dx:dx + size] for dy in range(3) for dx in range(3)])
        boundary = neighbours.min(0) != neighbours.max(0)
        assert np.array_equal((image > 0.4)[~boundary], out_mask[~boundary].astype(bool))
        assert abs(int(out_mask.sum()) - int(mask.sum())) < 0.1 * mask.sum()  # the pattern stays inside the frame


def test_rotation_is_about_the_image_centre():
    """An off-centre disc's centroid lands where the flip-then-rotate map about ((S-1)/2, (S-1)/2) puts it."""
    size, centre = 48, 23.5
    yy, xx = np.mgrid[:size, :size]
    offset = np.array([9.0, -6.0])  # (u, v) = (x - centre, y - centre) of the disc's centre
    disc = (np.hypot(xx - centre - offset[0], yy - centre - offset[1]) < 6).astype(np.uint8)
    angles = np.array([0.3, 1.1, 2.0, 3.7, 5.9], np.float32)
    flips = np.array([False, True, False, True, True])
    _, masks = transform_batch(np.zeros((5, size, size, 1), np.float32), np.repeat(disc[None, ..., None], 5, 0),
                               angles, flips, ~flips)
    for out, angle, flip in zip(masks.numpy()[..., 0], angles, flips):
        cos, sin = np.cos(angle), np.sin(angle)
        to_input = np.diag([-1.0, 1.0] if flip else [1.0, -1.0]) @ np.array([[cos, -sin], [sin, cos]])
        expected = to_input.T @ offset + centre  # the map is orthogonal: its inverse is its transpose
        centroid = np.array([(xx * out).sum(), (yy * out).sum()]) / out.sum()
        np.testing.assert_allclose(centroid, expected, atol=0.15)


# ---------------------------------------------------------------- train branch

CODES = {("calcium",): 50, ("wall_lumen",): 100, BOTH: 150, (): 200}


def _coded_records(tmp_path, kinds):
    """Records whose constant image value tells which labels a frame carries (CODES), so batches can be audited."""
    from tfrecords_builder.writer import write_records

    frames = []
    for i, tasks in enumerate(kinds):
        frames.append({"frame_id": str(i), "image": np.full((40, 40), CODES[tasks], np.uint8),
                       "calcium_mask": np.eye(40, dtype=np.uint8) if "calcium" in tasks else None,
                       "wall_lumen_mask": np.full((40, 40), 2, np.uint8) if "wall_lumen" in tasks else None,
                       "pixel_spacing_mm": 0.02})
    out = tmp_path / "coded"
    write_records({"c": frames}, out)
    return out


def _kinds_of(image_batch, size):
    centre = image_batch[:, size // 2, size // 2, 0] * 255
    by_code = {code: tasks for tasks, code in CODES.items()}
    return [by_code[int(round(value))] for value in centre]


@pytest.mark.parametrize("batch_size, fraction, calcium_per_batch", [(5, 0.4, 2), (4, 0.5, 2), (3, 0.9, 3)])
def test_multitask_batches_mix_streams_exactly(tmp_path, batch_size, fraction, calcium_per_batch):
    kinds = [("calcium",)] * 3 + [("wall_lumen",)] * 4 + [BOTH] * 2 + [()] * 3
    records = _coded_records(tmp_path, kinds)
    config = PipelineConfig(image_size=24, batch_size=batch_size, calcium_fraction=fraction, seed=7)
    assert [s.per_batch for s in train_streams(records, ["c"], config)] == (
        [calcium_per_batch, batch_size - calcium_per_batch] if calcium_per_batch < batch_size else [batch_size])
    dataset = make_train_dataset(records, ["c"], config)
    assert dataset.cardinality().numpy() == -1  # infinite
    seen = set()
    for image, targets, weights in _batches(dataset, 12):
        assert image.shape == (batch_size, 24, 24, 1)
        kinds_in_batch = _kinds_of(image, 24)
        assert () not in kinds_in_batch
        assert sum("calcium" in k for k in kinds_in_batch) == calcium_per_batch
        for i, kind in enumerate(kinds_in_batch):
            assert weights["calcium"][i] == ("calcium" in kind) and weights["wall_lumen"][i] == ("wall_lumen" in kind)
            assert targets["wall_lumen"][i].any() == ("wall_lumen" in kind)
        seen.update(kinds_in_batch)
    assert seen == ({("calcium",), BOTH, ("wall_lumen",)} if calcium_per_batch < batch_size else {("calcium",), BOTH})


def test_one_empty_stream_and_single_task(tmp_path):
    records = _coded_records(tmp_path, [BOTH] * 3 + [("calcium",)] * 2 + [()])
    config = PipelineConfig(image_size=24, batch_size=4, flip=False, rotate=False)
    assert [(s.name, s.frames, s.per_batch) for s in train_streams(records, ["c"], config)] == [("calcium", 5, 4)]
    for image, _, weights in _batches(make_train_dataset(records, ["c"], config), 4):
        assert weights["calcium"].all() and weights["wall_lumen"].sum() == _kinds_of(image, 24).count(BOTH)
    single = PipelineConfig(image_size=24, batch_size=4, tasks=("wall_lumen",))
    for image, targets, weights in _batches(make_train_dataset(records, ["c"], single), 4):
        assert list(targets) == ["wall_lumen"] and list(weights) == ["wall_lumen"] and weights["wall_lumen"].all()
        assert set(_kinds_of(image, 24)) == {BOTH}


def test_same_seed_same_batches_other_seed_other_batches(make_records):
    records = make_records({"a": [(i, BOTH if i % 2 else ("wall_lumen",)) for i in range(8)]})

    def run(seed):
        return _batches(make_train_dataset(records, ["a"], PipelineConfig(seed=seed, **SMALL)), 3)

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1]["wall_lumen"], b[1]["wall_lumen"])
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(first, other))


def test_keras_fit_and_evaluate_take_the_elements(make_records):
    """A model with outputs named after the tasks and per-frame losses trains on the elements as they come."""
    import keras
    from keras import ops

    class FrameCrossentropy(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred), axis=(1, 2))

    records = make_records({"a": [(0, BOTH), (1, ("calcium",)), (2, ("wall_lumen",))]})
    config = PipelineConfig(image_size=16, batch_size=2)
    inputs = keras.Input((16, 16, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = {task: keras.layers.Conv2D(n, 1, activation="softmax", name=task)(features)
               for task, n in (("calcium", 2), ("wall_lumen", 3))}
    model = keras.Model(inputs, outputs)
    model.compile("adam", loss={task: FrameCrossentropy() for task in outputs})
    history = model.fit(make_train_dataset(records, ["a"], config), steps_per_epoch=2, epochs=1, shuffle=False,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(model.evaluate(make_eval_dataset(records, ["a"], config), verbose=0)[0])
