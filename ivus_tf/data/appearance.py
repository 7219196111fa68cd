"""Appearance augmentation of whole batches, nnU-Net style: the image changes, the masks do not.

`random_appearance` draws, per frame and independently, which transforms of `ivus_tf.augment_config.AugmentConfig`
apply and with what strength (stateless random ops keyed by the batch's seed: reproducible, whatever the tf.data
parallelism), then runs each transform on the frames it chose only (gathered into a sub-batch, scattered back), so a
transform applied to 10 % of the frames costs about 10 % of a full-batch pass. Frames no transform chose come out
bitwise unchanged. Each transform is also a plain function of explicit per-frame parameters (tested on its own):

* `multiply_speckle`: x * (1 + s * n), n zero-mean Rayleigh amplitude (normalised to mean 1, minus 1) drawn on a
  polar grid centred on the catheter, so the grain is elongated along the arc and grows with depth like IVUS speckle
  (cells of S/128 px radially and 2.8 degrees in angle, linear in angle between cells with the variance kept);
* `add_gaussian_noise`: x + std * N(0, 1) per pixel;
* `gaussian_blur`: separable Gaussian of sigma (px), reflect padding;
* `adjust_brightness`: x * factor + offset;
* `adjust_contrast`: (x - mean) * factor + mean, clipped to the frame's own [min, max] (nnU-Net `preserve_range`);
* `simulate_low_resolution`: nearest downsampling to scale * S, bilinear upsampling back (one warp each);
* `adjust_gamma`: gamma on the frame's min-max rescaled intensities, optionally of the inverted image, rescaled back
  (nnU-Net's `GammaTransform` without its `retain_stats`, since an IVUS frame's intensities are absolute: black is no
  echo, and restoring mean and variance would lift the black background).

Images are float32 [B, S, S, 1] in [0, 1]; `random_appearance` clips its result to [0, 1].
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ivus_tf.augment_config import AugmentConfig
from ivus_tf.core.tf_import import import_tensorflow

tf = import_tensorflow()

_STREAM = 0x61756720  # folded into the batch seed: appearance draws never reuse the flip/rotation draws
_ZOOM, _SPECKLE, _NOISE, _BLUR, _BRIGHTNESS, _OFFSET, _CONTRAST, _LOW_RESOLUTION, _INVERTED_GAMMA, _GAMMA = range(10)
_ANGULAR_CELLS = 128


def stream_seeds(seed: "tf.Tensor", stream: int) -> "tf.Tensor":
    """[3, 2] seeds (selection, parameters, pixels) of one transform, from the batch's int [2] seed."""
    base = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), _STREAM + stream)
    return tf.random.experimental.stateless_split(base, num=3)


def sample_range(seed: "tf.Tensor", count: "tf.Tensor", value_range: tuple[float, float]) -> "tf.Tensor":
    """[count] float32 draws from [low, high]; when low < 1 < high, half of them from [low, 1] and half from
    [1, high] (nnU-Net's `BGContrast`), so a multiplier is as likely to shrink as to grow."""
    low, high = (float(v) for v in value_range)
    draws = tf.random.stateless_uniform(tf.stack([2, count]), seed, dtype=tf.float32)
    if low < 1.0 < high:
        return tf.where(draws[0] < 0.5, low + draws[1] * (1.0 - low), 1.0 + draws[1] * (high - 1.0))
    return low + draws[1] * (high - low)


def random_choice(seeds: "tf.Tensor", count: "tf.Tensor", probability: float, value_range, identity: float):
    """(chosen [count] bool, value [count] float32): the drawn value where chosen, `identity` elsewhere."""
    chosen = tf.random.stateless_uniform(tf.reshape(count, [1]), seeds[0]) < probability
    return chosen, tf.where(chosen, sample_range(seeds[1], count, value_range), identity)


def random_zooms(seed: "tf.Tensor", count: "tf.Tensor", config: AugmentConfig) -> "tf.Tensor":
    """[count] content magnifications (1 where the frame is not zoomed), for `augment.transform_batch`."""
    return random_choice(stream_seeds(seed, _ZOOM), count, config.aug_zoom_probability, config.aug_zoom_range, 1.0)[1]


# ------------------------------------------------------------------------------------------------ transforms


def _per_frame(values: "tf.Tensor") -> "tf.Tensor":
    return tf.reshape(tf.cast(values, tf.float32), [-1, 1, 1, 1])


@functools.lru_cache(maxsize=16)
def _polar_lookup(size: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid cells, flat cell index of each pixel's two angular neighbours, their variance-keeping weights)."""
    centre = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    radius, angle = np.hypot(yy - centre, xx - centre), np.arctan2(yy - centre, xx - centre) % (2 * np.pi)
    ring = np.floor(radius / max(1.0, size / 128.0)).astype(np.int64)
    position = angle / (2 * np.pi) * _ANGULAR_CELLS
    first = np.floor(position).astype(np.int64) % _ANGULAR_CELLS
    weight = position - np.floor(position)
    norm = np.sqrt((1 - weight) ** 2 + weight**2)
    cells = (int(ring.max()) + 1) * _ANGULAR_CELLS
    index = lambda a: (ring * _ANGULAR_CELLS + a).reshape(-1).astype(np.int32)  # noqa: E731
    return (cells, index(first), index((first + 1) % _ANGULAR_CELLS),
            ((1 - weight) / norm).reshape(-1).astype(np.float32), (weight / norm).reshape(-1).astype(np.float32))


def multiply_speckle(images: "tf.Tensor", strengths: "tf.Tensor", seed: "tf.Tensor") -> "tf.Tensor":
    """x * max(0, 1 + strength * n): n is Rayleigh speckle (mean 0, std 0.52) on a polar grid about the centre."""
    size = int(images.shape[1])
    cells, first, second, weight_first, weight_second = _polar_lookup(size)
    count = tf.shape(images)[0]
    uniform = tf.random.stateless_uniform(tf.stack([count, cells]), seed, minval=1e-7, maxval=1.0)
    rayleigh = tf.sqrt(-tf.math.log(uniform)) * (2.0 / math.sqrt(math.pi)) - 1.0  # mean 0 (mean-1 amplitude - 1)
    noise = tf.gather(rayleigh, first, axis=1) * weight_first + tf.gather(rayleigh, second, axis=1) * weight_second
    noise = tf.reshape(noise, tf.shape(images))
    return images * tf.maximum(0.0, 1.0 + _per_frame(strengths) * noise)


def add_gaussian_noise(images: "tf.Tensor", stds: "tf.Tensor", seed: "tf.Tensor") -> "tf.Tensor":
    """x + std * N(0, 1), independent per pixel."""
    return images + _per_frame(stds) * tf.random.stateless_normal(tf.shape(images), seed)


def gaussian_blur(images: "tf.Tensor", sigmas_px: "tf.Tensor", radius_px: int) -> "tf.Tensor":
    """Separable Gaussian blur of each frame with its own sigma (px), taps -radius..radius, reflect padding.

    The frames become the channels of one image, so one depthwise convolution per axis blurs them all."""
    size = int(images.shape[1])
    radius = max(1, min(int(radius_px), size - 1))
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigmas = tf.maximum(tf.cast(sigmas_px, tf.float32), 1e-3)[:, None]
    kernels = tf.exp(-0.5 * (taps[None, :] / sigmas) ** 2)
    kernels = tf.transpose(kernels / tf.reduce_sum(kernels, axis=1, keepdims=True))  # [taps, frames]
    stacked = tf.pad(tf.transpose(images, [3, 1, 2, 0]), [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                     mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(stacked, kernels[:, None, :, None], [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, kernels[None, :, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(blurred, [3, 1, 2, 0])


def adjust_brightness(images: "tf.Tensor", factors: "tf.Tensor", offsets: "tf.Tensor") -> "tf.Tensor":
    """x * factor + offset (factor 1, offset 0: unchanged bit for bit)."""
    return images * _per_frame(factors) + _per_frame(offsets)


def adjust_contrast(images: "tf.Tensor", factors: "tf.Tensor") -> "tf.Tensor":
    """(x - mean) * factor + mean, clipped to the frame's [min, max] (nnU-Net's ContrastTransform, preserve_range)."""
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((images - mean) * _per_frame(factors) + mean, low, high)


def _scale_transforms(scales: "tf.Tensor") -> "tf.Tensor":
    """[k, 8] output->input maps x_in = (x_out + 0.5) * scale - 0.5 (pixel centres at integers), same for y."""
    scales = tf.cast(scales, tf.float32)
    shift, zeros = 0.5 * scales - 0.5, tf.zeros_like(scales)
    return tf.stack([scales, zeros, shift, zeros, scales, shift, zeros, zeros], axis=1)


def simulate_low_resolution(images: "tf.Tensor", scales: "tf.Tensor") -> "tf.Tensor":
    """Nearest downsampling to scale * S pixels (into the top-left corner), bilinear upsampling back to S."""

    def warp(tensor, transforms, interpolation):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=tensor, transforms=transforms, output_shape=tf.shape(images)[1:3],
            fill_value=tf.constant(0.0, tf.float32), interpolation=interpolation, fill_mode="NEAREST")

    small = warp(images, _scale_transforms(1.0 / tf.cast(scales, tf.float32)), "NEAREST")
    return warp(small, _scale_transforms(scales), "BILINEAR")


def adjust_gamma(images: "tf.Tensor", gammas: "tf.Tensor", invert: bool = False) -> "tf.Tensor":
    """Gamma on each frame's min-max rescaled intensities r: r ** gamma, or 1 - (1 - r) ** gamma with `invert`;
    rescaled back to the frame's [min, max]. gamma > 1 darkens mid-tones (inverted: brightens them)."""
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    span = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True) - low
    rescaled = (images - low) / tf.maximum(span, 1e-7)
    base = 1.0 - rescaled if invert else rescaled
    powered = tf.where(base > 0, tf.exp(_per_frame(gammas) * tf.math.log(tf.maximum(base, 1e-30))), 0.0)
    return (1.0 - powered if invert else powered) * span + low


# ------------------------------------------------------------------------------------------------ random driver


def _on_chosen(images: "tf.Tensor", chosen: "tf.Tensor", transform, *values: "tf.Tensor") -> "tf.Tensor":
    """`transform(sub_batch, *per_frame_values)` on the chosen frames only; the others pass through untouched."""
    index = tf.where(chosen)

    def apply():
        out = transform(tf.gather_nd(images, index), *(tf.gather_nd(v, index) for v in values))
        return tf.tensor_scatter_nd_update(images, index, out)

    return tf.cond(tf.size(index) > 0, apply, lambda: images)


def random_appearance(images: "tf.Tensor", seed: "tf.Tensor", config: AugmentConfig) -> "tf.Tensor":
    """The appearance transforms of `config` on a batch [B, S, S, 1] in [0, 1], seeded by an int [2] `seed`;
    clipped to [0, 1]. Zoom is geometric and applied by `ivus_tf.data.augment.augment_batch` instead."""
    count = tf.shape(images)[0]

    def draw(stream, probability, value_range, identity):
        seeds = stream_seeds(seed, stream)
        return (*random_choice(seeds, count, probability, value_range, identity), seeds[2])

    c = config
    if c.aug_speckle_probability > 0:
        chosen, strengths, pixels = draw(_SPECKLE, c.aug_speckle_probability, c.aug_speckle_strength_range, 0.0)
        images = _on_chosen(images, chosen, lambda x, s: multiply_speckle(x, s, pixels), strengths)
    if c.aug_noise_probability > 0:
        chosen, stds, pixels = draw(_NOISE, c.aug_noise_probability, c.aug_noise_std_range, 0.0)
        images = _on_chosen(images, chosen, lambda x, s: add_gaussian_noise(x, s, pixels), stds)
    if c.aug_blur_probability > 0:
        chosen, sigmas, _ = draw(_BLUR, c.aug_blur_probability, c.aug_blur_sigma_px_range, 0.0)
        radius = math.ceil(3.0 * c.aug_blur_sigma_px_range[1])
        images = _on_chosen(images, chosen, lambda x, s: gaussian_blur(x, s, radius), sigmas)
    if c.aug_brightness_probability > 0 or c.aug_brightness_offset_probability > 0:
        _, factors, _ = draw(_BRIGHTNESS, c.aug_brightness_probability, c.aug_brightness_range, 1.0)
        _, offsets, _ = draw(_OFFSET, c.aug_brightness_offset_probability, c.aug_brightness_offset_range, 0.0)
        images = adjust_brightness(images, factors, offsets)  # elementwise: cheaper on all frames than gathered
    if c.aug_contrast_probability > 0:
        chosen, factors, _ = draw(_CONTRAST, c.aug_contrast_probability, c.aug_contrast_range, 1.0)
        images = _on_chosen(images, chosen, adjust_contrast, factors)
    if c.aug_low_resolution_probability > 0:
        chosen, scales, _ = draw(_LOW_RESOLUTION, c.aug_low_resolution_probability,
                                 c.aug_low_resolution_scale_range, 1.0)
        images = _on_chosen(images, chosen, simulate_low_resolution, scales)
    for stream, probability, invert in ((_INVERTED_GAMMA, c.aug_inverted_gamma_probability, True),
                                        (_GAMMA, c.aug_gamma_probability, False)):
        if probability > 0:
            chosen, gammas, _ = draw(stream, probability, c.aug_gamma_range, 1.0)
            images = _on_chosen(images, chosen, functools.partial(adjust_gamma, invert=invert), gammas)
    return tf.clip_by_value(images, 0.0, 1.0)
