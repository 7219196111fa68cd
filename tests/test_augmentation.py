"""Appearance augmentation (`ivus_tf.data.appearance`), zoom in the batch warp and their configuration."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from ivus_tf.augment_config import AUGMENT_FIELDS, AugmentConfig
from ivus_tf.core.config import from_mapping
from ivus_tf.data import appearance as A
from ivus_tf.data.augment import augment_batch, random_parameters, transform_batch
from ivus_tf.data.pipeline import PipelineConfig, make_train_dataset
from ivus_tf.core.errors import InputError

PROBABILITIES = [name for name in AUGMENT_FIELDS if name.endswith("_probability")]
ALWAYS = AugmentConfig(appearance_augmentation=True, **{name: 1.0 for name in PROBABILITIES})
NEVER = AugmentConfig(appearance_augmentation=True, **{name: 0.0 for name in PROBABILITIES})
SEED = np.array([5, 9], np.int64)


def _frames(count=6, size=48, seed=0):
    """IVUS-like frames in [0, 1]: bright ring on a dark disc, speckle, black outside the field of view."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    radius = np.hypot(yy, xx)
    base = np.where(radius < size / 2, 0.25, 0.0) + np.where(np.abs(radius - size / 4) < 3, 0.5, 0.0)
    images = base * rng.rayleigh(0.8, (count, size, size))
    return np.clip(images, 0, 1).astype(np.float32)[..., None]


def _masks(count=6, size=48):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    ring = (np.abs(np.hypot(yy, xx) - size / 4) < 3).astype(np.uint8)
    return np.repeat(ring[None, ..., None], count, 0)


def _high_frequency_energy(images):
    """Mean squared Laplacian per frame (interior pixels)."""
    x = np.asarray(images)[..., 0].astype(np.float64)
    laplacian = x[:, 1:-1, :-2] + x[:, 1:-1, 2:] + x[:, :-2, 1:-1] + x[:, 2:, 1:-1] - 4 * x[:, 1:-1, 1:-1]
    return (laplacian**2).mean(axis=(1, 2))


# ---------------------------------------------------------------- reproducibility, independence, masks


def test_same_seed_same_frames_other_seed_or_frame_other_result():
    image = _frames(1)
    images, masks = np.repeat(image, 6, 0), _masks()
    first, again = (augment_batch(images, masks, SEED, augment=ALWAYS) for _ in range(2))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    other = augment_batch(images, masks, SEED + 1, augment=ALWAYS)
    assert not np.array_equal(first[0], other[0])
    out = np.asarray(first[0])
    for i in range(1, 6):  # identical input frames, independent draws
        assert not np.allclose(out[0], out[i], atol=1e-3)


def test_appearance_leaves_masks_alone_and_off_is_flips_and_rotations_exactly():
    images, masks = _frames(), _masks()
    paper = augment_batch(images, masks, SEED)
    angles, horizontal, vertical = random_parameters(SEED, 6)
    today = transform_batch(images, masks, angles, horizontal, vertical)  # the flips + rotations path by hand
    for augment in (None, AugmentConfig(), dataclasses.replace(ALWAYS, appearance_augmentation=False)):
        off = augment_batch(images, masks, SEED, augment=augment)
        np.testing.assert_array_equal(off[0], today[0])
        np.testing.assert_array_equal(off[1], today[1])
    no_zoom = augment_batch(images, masks, SEED, augment=dataclasses.replace(ALWAYS, aug_zoom_probability=0.0))
    np.testing.assert_array_equal(no_zoom[1], paper[1])  # appearance changes the image only
    assert not np.allclose(no_zoom[0], paper[0], atol=1e-3)
    unchosen = augment_batch(images, masks, SEED, augment=NEVER)  # on, but no frame chosen: bit for bit the same
    np.testing.assert_array_equal(unchosen[0], paper[0])
    np.testing.assert_array_equal(unchosen[1], paper[1])


TRANSFORMS = {  # probability field: settings under which the transform surely changes a frame
    "aug_speckle_probability": {}, "aug_noise_probability": {"aug_noise_std_range": (0.05, 0.05)},
    "aug_blur_probability": {}, "aug_brightness_probability": {"aug_brightness_range": (1.5, 1.5)},
    "aug_brightness_offset_probability": {"aug_brightness_offset_range": (0.1, 0.1)},
    "aug_contrast_probability": {"aug_contrast_range": (0.5, 0.5)},
    "aug_low_resolution_probability": {"aug_low_resolution_scale_range": (0.5, 0.5)},
    "aug_gamma_probability": {"aug_gamma_range": (1.5, 1.5)},
    "aug_inverted_gamma_probability": {"aug_gamma_range": (1.5, 1.5)},
}


@pytest.mark.parametrize("field", sorted(TRANSFORMS))
def test_each_transform_chooses_its_share_of_frames_and_leaves_the_others_bitwise(field):
    images = np.repeat(_frames(1, size=32), 120, 0)
    config = dataclasses.replace(NEVER, **{field: 0.5}, **TRANSFORMS[field])
    out = np.asarray(A.random_appearance(images, SEED, config))
    changed = np.abs(out - images).max(axis=(1, 2, 3)) > 0
    assert 0.35 < changed.mean() < 0.65, field
    np.testing.assert_array_equal(out[~changed], images[~changed])


def test_transforms_choose_frames_independently():
    """Each transform has its own random stream: which frames it picks is unrelated to the others' picks."""
    picks = np.stack([np.asarray(A.random_choice(A.stream_seeds(SEED, stream), 2000, 0.5, (0.5, 2.0), 1.0)[0])
                      for stream in range(10)])
    agreement = (picks[:, None, :] == picks[None, :, :]).mean(axis=2)
    assert np.all(np.abs(agreement[~np.eye(10, dtype=bool)] - 0.5) < 0.05)


def test_values_stay_in_the_unit_range():
    extreme = dataclasses.replace(ALWAYS, aug_brightness_range=(0.0, 3.0), aug_brightness_offset_range=(-1.0, 1.0),
                                  aug_noise_std_range=(0.5, 1.0), aug_contrast_range=(0.0, 4.0))
    out = np.asarray(A.random_appearance(_frames(12), SEED, extreme))
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0 and np.isfinite(out).all()


# ---------------------------------------------------------------- each transform in its expected direction


def test_gamma_on_the_rescaled_frame():
    ramp = np.linspace(0.1, 0.9, 48 * 48, dtype=np.float32).reshape(1, 48, 48, 1)
    images = np.repeat(ramp, 3, 0)
    darker, same, lighter = np.asarray(A.adjust_gamma(images, [1.5, 1.0, 0.7]))
    rescaled = (ramp[0] - 0.1) / 0.8
    np.testing.assert_allclose(darker, rescaled**1.5 * 0.8 + 0.1, atol=1e-6)  # hand-computed, range kept
    np.testing.assert_allclose(same, ramp[0], atol=1e-6)
    middle = np.abs(ramp[0] - 0.5) < 0.2
    assert (darker[middle] < ramp[0][middle]).all() and (lighter[middle] > ramp[0][middle]).all()
    inverted = np.asarray(A.adjust_gamma(ramp, [1.5], invert=True))[0]
    np.testing.assert_allclose(inverted, (1 - (1 - rescaled) ** 1.5) * 0.8 + 0.1, atol=1e-6)
    assert (inverted[middle] > ramp[0][middle]).all()


def test_blur_matches_scipy_and_removes_high_frequencies():
    images = np.random.default_rng(1).random((3, 32, 32, 1)).astype(np.float32)
    sigmas = [1.0, 0.5, 0.0]
    blurred = np.asarray(A.gaussian_blur(images, sigmas, radius_px=3))
    for image, out, sigma in zip(images[..., 0], blurred[..., 0], sigmas):
        if sigma:
            expected = ndimage.gaussian_filter(image.astype(np.float64), sigma, mode="mirror", truncate=3 / sigma)
            np.testing.assert_allclose(out, expected, atol=1e-5)
        else:
            np.testing.assert_allclose(out, image, atol=1e-6)
    energy = _high_frequency_energy(blurred)
    assert energy[0] < energy[1] < 0.5 * energy[2]


def test_low_resolution_removes_high_frequencies_and_scale_1_is_identity():
    images = _frames(3, size=64)
    out = np.asarray(A.simulate_low_resolution(images, [0.5, 0.75, 1.0]))
    np.testing.assert_array_equal(out[2], images[2])
    energy, before = _high_frequency_energy(out), _high_frequency_energy(images)
    assert energy[0] < 0.6 * before[0] and energy[1] < 0.85 * before[1]
    np.testing.assert_allclose(out[:2].mean(axis=(1, 2, 3)), images[:2].mean(axis=(1, 2, 3)), rtol=0.05)
    # nearest downsampling by 2, then bilinear: a frame of 2x2 blocks comes back unchanged away from block edges
    blocks = np.kron(np.random.default_rng(2).random((16, 16)), np.ones((2, 2))).astype(np.float32)
    back = np.asarray(A.simulate_low_resolution(blocks[None, ..., None], [0.5]))[0, ..., 0]
    assert np.abs(back - blocks).max() <= 0.5 * np.abs(np.diff(blocks, axis=0)).max() + 1e-6


def test_gaussian_noise_adds_the_requested_variance():
    flat = np.full((2, 64, 64, 1), 0.5, np.float32)
    out = np.asarray(A.add_gaussian_noise(flat, [0.05, 0.0], SEED))
    assert abs(out[0].std() - 0.05) < 0.003 and abs(out[0].mean() - 0.5) < 0.003
    np.testing.assert_array_equal(out[1], flat[1])


def test_speckle_is_multiplicative_and_elongated_along_the_arc():
    size = 128
    flat = np.full((4, size, size, 1), 0.5, np.float32)
    flat[:, :10, :10] = 0.0  # black stays black
    out = np.asarray(A.multiply_speckle(flat, [0.4] * 4, SEED))
    assert (out[:, :10, :10] == 0).all()
    region = out[:, 20:-20, 20:-20]
    assert abs(region.std() / 0.5 - 0.4 * 0.523) < 0.03 and abs(region.mean() - 0.5) < 0.01
    # on the horizontal axis right of the centre, the arc runs vertically and the radius horizontally
    noise = out[..., 0] - 0.5
    rows, cols = slice(size // 2 - 4, size // 2 + 4), slice(size // 2 + 30, size // 2 + 55)
    along_arc = np.corrcoef(noise[:, rows, cols].ravel(), noise[:, 1 + rows.start:1 + rows.stop, cols].ravel())[0, 1]
    along_radius = np.corrcoef(noise[:, rows, cols].ravel(),
                               noise[:, rows, 1 + cols.start:1 + cols.stop].ravel())[0, 1]
    assert along_arc > 0.6 and along_radius < 0.3


def test_brightness_and_contrast():
    images = _frames(3)
    out = np.asarray(A.adjust_brightness(images, [1.2, 1.0, 1.0], [0.0, 0.1, 0.0]))
    np.testing.assert_allclose(out[0].mean(), 1.2 * images[0].mean(), rtol=1e-5)
    np.testing.assert_allclose(out[1], images[1] + 0.1, atol=1e-6)
    np.testing.assert_array_equal(out[2], images[2])
    stronger, weaker = np.asarray(A.adjust_contrast(images[:2], [1.5, 0.5]))
    assert stronger.std() > images[0].std() and weaker.std() < images[1].std()
    np.testing.assert_allclose(weaker.mean(), images[1].mean(), rtol=1e-5)  # no clipping when lowering contrast
    assert images[0].min() <= stronger.min() and stronger.max() <= images[0].max()  # kept in the frame's range


def test_multipliers_are_drawn_below_and_above_1_equally():
    draws = np.asarray(A.sample_range(SEED, 4000, (0.7, 1.4)))
    assert draws.min() >= 0.7 and draws.max() <= 1.4 and abs((draws < 1).mean() - 0.5) < 0.03
    plain = np.asarray(A.sample_range(SEED, 4000, (0.5, 1.0)))
    assert abs(plain.mean() - 0.75) < 0.01


# ---------------------------------------------------------------- zoom


def test_zoom_about_the_centre_keeps_image_and_masks_aligned():
    size, centre = 64, 31.5
    yy, xx = np.mgrid[:size, :size]
    offset = np.array([8.0, -5.0])  # (u, v) of an off-centre disc, like calcium off the catheter
    disc = (np.hypot(xx - centre - offset[0], yy - centre - offset[1]) < 6).astype(np.uint8)
    zooms = np.array([0.7, 1.0, 1.4], np.float32)
    images, masks = transform_batch(np.repeat(0.9 * disc[None, ..., None], 3, 0).astype(np.float32),
                                    np.repeat(disc[None, ..., None], 3, 0), np.zeros(3, np.float32),
                                    np.zeros(3, bool), np.zeros(3, bool), zooms)
    np.testing.assert_array_equal(masks[1, ..., 0], disc)
    for image, mask, zoom in zip(np.asarray(images)[..., 0], np.asarray(masks)[..., 0], zooms):
        centroid = np.array([(xx * mask).sum(), (yy * mask).sum()]) / mask.sum()
        np.testing.assert_allclose(centroid, centre + zoom * offset, atol=0.3)  # about the image centre
        assert abs(mask.sum() / disc.sum() - zoom**2) < 0.15
        padded = np.pad(mask, 1, mode="edge")
        neighbours = np.stack([padded[dy:dy + size, dx:dx + size] for dy in range(3) for dx in range(3)])
        boundary = neighbours.min(0) != neighbours.max(0)
        np.testing.assert_array_equal((image > 0.45)[~boundary], mask[~boundary].astype(bool))


def test_random_zoom_goes_into_the_single_warp_with_the_rotation():
    images, masks = _frames(8), _masks(8)
    zoomed = dataclasses.replace(NEVER, aug_zoom_probability=1.0)
    out_images, out_masks = augment_batch(images, masks, SEED, augment=zoomed)
    angles, horizontal, vertical = random_parameters(SEED, 8)
    zooms = A.random_zooms(SEED, 8, zoomed)
    assert 0.7 <= np.min(zooms) < 1 < np.max(zooms) <= 1.4
    expected = transform_batch(images, masks, angles, horizontal, vertical, zooms)
    np.testing.assert_array_equal(out_images, expected[0])
    np.testing.assert_array_equal(out_masks, expected[1])


# ---------------------------------------------------------------- configuration and the pipeline


@pytest.mark.parametrize("values, words", [
    ({"aug_gamma_probability": 1.5}, "aug_gamma_probability must be in [0, 1]"),
    ({"aug_zoom_range": [1.4, 0.7]}, "aug_zoom_range must be [low, high] with 0 < low <= high"),
    ({"aug_zoom_range": [0.0, 1.0]}, "aug_zoom_range must be [low, high] with 0 < low <= high"),
    ({"aug_low_resolution_scale_range": [0.5, 1.5]}, "scale_range must be [low, high] with 0 < low <= high <= 1"),
    ({"aug_speckle_strength_range": [0.1, 2.0]}, "<= 1, got [0.1, 2.0]"),
    ({"aug_zoom_range": [0.7]}, "expected 2 values"),
])
def test_bad_augmentation_settings_are_named(values, words):
    with pytest.raises(InputError) as error:
        from_mapping(PipelineConfig, values, "train.yaml")
    assert words in str(error.value) and str(error.value).startswith("train.yaml: ")


def test_pipeline_with_appearance_on_changes_images_not_targets(make_records):
    both = ("calcium", "wall_lumen")
    records = make_records({"a": [(i, both if i % 2 else ("wall_lumen",)) for i in range(8)]})

    def run(**changes):
        config = PipelineConfig(image_size=32, batch_size=4, seed=3, **changes)
        return [(np.asarray(image), {k: np.asarray(v) for k, v in targets.items()})
                for image, targets, _ in make_train_dataset(records, ["a"], config).take(2)]

    paper = run()
    for (image, targets), (plain_image, plain_targets) in zip(run(appearance_augmentation=True,
                                                                  aug_zoom_probability=0.0, aug_gamma_probability=1.0),
                                                              paper):
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert not np.array_equal(image, plain_image)
        for task in both:
            np.testing.assert_array_equal(targets[task], plain_targets[task])
