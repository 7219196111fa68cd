"""Augmentation of whole batches: flips, rotations by any angle and zoom about the image centre, then appearance.

The catheter sits at the image centre, so any rotation about it and any mirror image are frames the scanner could
have produced (Bargsten et al. 2021 train with random flips and rotations). Each frame's flips, rotation and zoom
are composed into one affine matrix and applied to the whole batch at once: bilinear for the image, nearest for
the masks (which so stay aligned and inside their label set), fill 0. The appearance transforms of
`ivus_tf.data.appearance` then change the image only. Conventions: `affine_transforms`,
docs/augmentation.md#one-warp-per-batch.
"""

from __future__ import annotations

import math

from ivus_tf.augment_config import AugmentConfig
from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.data.appearance import random_appearance, random_zooms

tf = import_tensorflow()

_SNAP = 1e-6


def _snap(value: tf.Tensor) -> tf.Tensor:
    """Round cos/sin values within 1e-6 of -1, 0 or 1 to it, so quarter turns are exact pixel permutations.

    In float32, cos(pi/2) is -4.4e-8, not 0: enough to make bilinear sampling mix in a neighbour by 1e-6.
    """
    nearest = tf.round(value)
    return tf.where(tf.abs(value - nearest) < _SNAP, nearest, value)


def affine_transforms(
    image_size: int,
    angles: tf.Tensor,
    flip_horizontal: tf.Tensor,
    flip_vertical: tf.Tensor,
    zooms: tf.Tensor | None = None,
) -> tf.Tensor:
    """[B, 8] float32 projective transforms (output pixel -> input pixel) for `ImageProjectiveTransformV3`.

    `angles` are [B] radians, the flips [B] booleans, `zooms` [B] magnifications (None: 1). Pixel centres sit at
    integer coordinates, the centre is c = (S-1)/2. The output is zoom(rotate(flip(input))): flips first
    (`np.flip(axis=1)` horizontal, `axis=0` vertical); a positive angle turns the picture counter-clockwise as
    displayed, so k * pi/2 reproduces `np.rot90(x, k)` exactly; z > 1 zooms in. With u = x - c, v = y - c the
    output->input map is F @ R(angle) / zoom, R = [[cos, -sin], [sin, cos]], F = diag(+-1, +-1).
    """
    angles = tf.cast(angles, tf.float32)
    cos, sin = _snap(tf.cos(angles)), _snap(tf.sin(angles))
    if zooms is not None:  # x / 1.0 is x bit for bit: unzoomed frames keep today's exact matrix
        zooms = tf.cast(zooms, tf.float32)
        cos, sin = cos / zooms, sin / zooms
    sign_x = tf.where(tf.cast(flip_horizontal, tf.bool), -1.0, 1.0)
    sign_y = tf.where(tf.cast(flip_vertical, tf.bool), -1.0, 1.0)
    a00, a01 = sign_x * cos, -sign_x * sin
    a10, a11 = sign_y * sin, sign_y * cos
    centre = (image_size - 1) / 2.0
    zeros = tf.zeros_like(a00)
    return tf.stack(
        [
            a00, a01, centre - centre * (a00 + a01),
            a10, a11, centre - centre * (a10 + a11),
            zeros, zeros,
        ],
        axis=1,
    )


def transform_batch(
    images: tf.Tensor,
    masks: tf.Tensor,
    angles: tf.Tensor,
    flip_horizontal: tf.Tensor,
    flip_vertical: tf.Tensor,
    zooms: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply given flips, rotations and zooms to a batch: images [B,S,S,C] float (bilinear), masks [B,S,S,M]
    (nearest).

    Both get the same matrix per batch item; pixels that come from outside the frame are 0 (background).
    The parameters are explicit so tests can force quarter turns and flips and compare with numpy.
    """
    size = images.shape[1] if images.shape[1] is not None else tf.shape(images)[1]
    transforms = affine_transforms(size, angles, flip_horizontal, flip_vertical, zooms)
    output_shape = tf.shape(images)[1:3]

    def warp(tensor: tf.Tensor, interpolation: str) -> tf.Tensor:
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=tensor,
            transforms=transforms,
            output_shape=output_shape,
            fill_value=tf.constant(0.0, tf.float32),
            interpolation=interpolation,
            fill_mode="CONSTANT",
        )

    return warp(images, "BILINEAR"), warp(masks, "NEAREST")


def random_parameters(
    seed: tf.Tensor, batch_size: tf.Tensor, flip: bool = True, rotate: bool = True
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Stateless random (angles, flip_horizontal, flip_vertical) for a batch, from an int [2] `seed`.

    Angles are uniform in [0, 2 pi) (any orientation of the catheter axis), each flip has probability 1/2.
    The same seed gives the same parameters on every run, whatever the tf.data parallelism.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    shape = tf.reshape(batch_size, [1])
    if rotate:
        angles = tf.random.stateless_uniform(shape, seeds[0], 0.0, 2.0 * math.pi, tf.float32)
    else:
        angles = tf.zeros(shape, tf.float32)
    if flip:
        flip_horizontal = tf.random.stateless_uniform(shape, seeds[1]) < 0.5
        flip_vertical = tf.random.stateless_uniform(shape, seeds[2]) < 0.5
    else:
        flip_horizontal = flip_vertical = tf.zeros(shape, tf.bool)
    return angles, flip_horizontal, flip_vertical


def augment_batch(
    images: tf.Tensor,
    masks: tf.Tensor,
    seed: tf.Tensor,
    flip: bool = True,
    rotate: bool = True,
    augment: AugmentConfig | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random flips, rotations and (with `augment.appearance_augmentation`) zooms of a batch in one warp (images
    bilinear, masks nearest), then the appearance transforms on the images; seeded statelessly by `seed`.

    Without appearance augmentation the result is exactly that of flips and rotations alone, and so are the masks
    with it when no frame is zoomed: the appearance draws use their own seeds (`appearance.stream_seeds`)."""
    appearance = augment is not None and augment.appearance_augmentation
    batch = tf.shape(images)[0]
    zooms = random_zooms(seed, batch, augment) if appearance and augment.aug_zoom_probability > 0 else None
    if flip or rotate or zooms is not None:
        angles, flip_horizontal, flip_vertical = random_parameters(seed, batch, flip, rotate)
        images, masks = transform_batch(images, masks, angles, flip_horizontal, flip_vertical, zooms)
    if appearance:
        images = random_appearance(images, seed, augment)
    return images, masks
