"""`AugmentConfig`: the nnU-Net-style augmentation settings, flat fields shared by `PipelineConfig` and `TrainConfig`.

Bargsten et al. (CDBME 2021) train with flips and rotations only (`flip`, `rotate`; always on). With
`appearance_augmentation` on, each training frame also gets, independently and each with its own probability, the
transforms nnU-Net uses to make models carry across sites (Isensee et al., Nature Methods 2021; nnU-Net v2
`nnUNetTrainer.get_training_transforms`), plus two IVUS-specific ones (speckle, brightness offset). In pipeline
order: zoom about the catheter (geometric: in the same single warp as flips and rotation, masks nearest), then on
the image only: multiplicative speckle, additive Gaussian noise, Gaussian blur, brightness (multiplicative, then an
offset), contrast, simulated lower resolution, inverted gamma, gamma; the result is clipped to [0, 1].

Probabilities are per frame. A range (low, high) that contains 1 is sampled as nnU-Net samples its multipliers
(`BGContrast`): half of the draws below 1, half above, so zooming in and out, brightening and darkening are equally
likely whatever the range's asymmetry. Where nnU-Net applies a transform per channel with probability 0.5 (blur,
lower resolution), the per-frame probability here is the product for our single-channel frames. Defaults: see
`docs/augmentation.md`. TF-free so that `TrainConfig` stays light; the transforms are in `ivus_tf.data.appearance`.
"""

from __future__ import annotations

import dataclasses
import math

from ivus_tf.core.errors import InputError


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Master switch and, per transform, a per-frame probability and a (low, high) range (docs/augmentation.md)."""

    appearance_augmentation: bool = False
    # geometric: content magnification about the image centre (the catheter); > 1 zooms in
    aug_zoom_probability: float = 0.2
    aug_zoom_range: tuple[float, float] = (0.7, 1.4)
    # multiplicative Rayleigh speckle, grain elongated along the arc; strength 1 = fully developed speckle
    aug_speckle_probability: float = 0.2
    aug_speckle_strength_range: tuple[float, float] = (0.1, 0.4)
    # additive Gaussian noise, standard deviation in [0, 1] intensity units
    aug_noise_probability: float = 0.1
    aug_noise_std_range: tuple[float, float] = (0.0, 0.06)
    # Gaussian blur, sigma in pixels of the training frame (image_size)
    aug_blur_probability: float = 0.1
    aug_blur_sigma_px_range: tuple[float, float] = (0.5, 1.0)
    # brightness: intensity multiplier, then an added offset (gain and noise floor of another scanner)
    aug_brightness_probability: float = 0.15
    aug_brightness_range: tuple[float, float] = (0.75, 1.25)
    aug_brightness_offset_probability: float = 0.15
    aug_brightness_offset_range: tuple[float, float] = (-0.05, 0.05)
    # contrast about the frame's mean, clipped to the frame's own range
    aug_contrast_probability: float = 0.15
    aug_contrast_range: tuple[float, float] = (0.75, 1.25)
    # lower resolution: nearest downsampling to scale x image_size, bilinear upsampling back
    aug_low_resolution_probability: float = 0.125
    aug_low_resolution_scale_range: tuple[float, float] = (0.5, 1.0)
    # gamma on the frame's min-max rescaled intensities; inverted: 1 - (1 - x) ** gamma
    aug_gamma_probability: float = 0.3
    aug_inverted_gamma_probability: float = 0.1
    aug_gamma_range: tuple[float, float] = (0.7, 1.5)

    def validate(self, source: str = "augmentation config") -> None:
        """Raise `InputError` naming the field when a probability or range is out of bounds."""
        for field in AUGMENT_FIELDS:
            if field.endswith("_probability") and not 0.0 <= getattr(self, field) <= 1.0:
                raise InputError(f"{source}: {field} must be in [0, 1], got {getattr(self, field)}")
        bounds = {  # field: (lowest, highest, whether low may equal lowest)
            "aug_zoom_range": (0.0, math.inf, False),
            "aug_speckle_strength_range": (0.0, 1.0, True),
            "aug_noise_std_range": (0.0, 1.0, True),
            "aug_blur_sigma_px_range": (0.0, 16.0, True),
            "aug_brightness_range": (0.0, math.inf, True),
            "aug_brightness_offset_range": (-1.0, 1.0, True),
            "aug_contrast_range": (0.0, math.inf, True),
            "aug_low_resolution_scale_range": (0.0, 1.0, False),
            "aug_gamma_range": (0.0, math.inf, False),
        }
        for field, (lowest, highest, inclusive) in bounds.items():
            low, high = getattr(self, field)
            if not ((low >= lowest if inclusive else low > lowest) and low <= high <= highest and math.isfinite(high)):
                rule = f"{lowest:g} {'<=' if inclusive else '<'} low <= high" + (
                    f" <= {highest:g}" if math.isfinite(highest) else " (finite)")
                raise InputError(f"{source}: {field} must be [low, high] with {rule}, got {[low, high]}")


AUGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig))


def augment_fields(config: object) -> dict:
    """{field: value} of the augmentation fields of any config that has them (TrainConfig, PipelineConfig)."""
    return {name: getattr(config, name) for name in AUGMENT_FIELDS}
