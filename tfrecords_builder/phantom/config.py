"""Phantom knobs: one flat dataclass, two presets.

Ranges are (low, high) and are sampled once per case, so cases differ in anatomy and image quality the way
pullbacks from different patients and systems do (values follow ../shared/IVUS_PRIMER.md, 20 MHz coronary IVUS).
Intensities are echo amplitudes in dB relative to soft plaque; attenuation is one-way, in dB per mm.

Difficulty knobs (documented defaults in `PRESETS["default"]`):
- speckle: `lateral_psf_sigma_mm`, `noise_db` (electronic noise floor, lifts shadows and the far field);
- calcium vs fibrous contrast: `calcium_db` minus `fibrous_db` (dense fibrous plaque is bright but casts no shadow);
- artifact and look-alike rates: `guidewire_probability`, `side_branches_per_10mm`, `fibrous_per_frame`,
  `bright_perivascular_per_frame`, `attenuated_plaque_probability`, `reverberation_probability`.

`PRESETS["benchmark"]` is FROZEN: later accuracy numbers are quoted on it. Change `default`, never `benchmark`
(a test pins its values).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple

from ivus_tf.core.errors import InputError

Range = Tuple[float, float]


@dataclass(frozen=True)
class PhantomConfig:
    # Frame geometry
    image_size: int = 500
    pixel_spacing_mm: float = 0.02
    a_lines: int = 1024
    # Pullback
    frame_spacing_mm: Range = (0.4, 1.0)
    catheter_radius_mm: float = 0.48
    # Anatomy (mm)
    eem_radius_mm: Range = (1.7, 2.6)
    plaque_burden: Range = (0.35, 0.72)
    plaque_eccentricity: Range = (0.1, 0.9)
    media_thickness_mm: Range = (0.1, 0.25)
    adventitia_thickness_mm: Range = (0.25, 0.5)
    # Calcium
    calcium_segments_per_10mm: float = 1.2
    calcium_segment_length_mm: Range = (3.0, 9.0)
    calcium_arc_deg: Range = (10.0, 360.0)
    calcium_thickness_mm: Range = (0.12, 0.45)
    calcium_db: Range = (10.0, 14.0)
    reverberation_probability: float = 0.5
    # Look-alikes and artifacts
    fibrous_db: Range = (4.0, 8.0)
    fibrous_per_frame: float = 0.8
    bright_perivascular_per_frame: float = 1.0
    attenuated_plaque_probability: float = 0.15
    guidewire_probability: float = 0.9
    side_branches_per_10mm: float = 0.6
    # Echo levels (dB relative to soft plaque) and attenuation (dB/mm one-way)
    blood_db: Range = (-22.0, -12.0)
    media_db: Range = (-20.0, -14.0)
    adventitia_db: Range = (6.0, 10.0)
    perivascular_db: Range = (-4.0, 0.0)
    tissue_attenuation_db_per_mm: Range = (0.8, 1.6)
    # Imaging system
    lateral_psf_sigma_mm: Range = (0.06, 0.11)
    axial_psf_sigma_mm: Range = (0.03, 0.045)
    noise_db: Range = (-34.0, -27.0)
    dynamic_range_db: Range = (48.0, 58.0)
    gain_db: Range = (-3.0, 3.0)
    # Non-gated pullback: cardiac motion between frames
    cardiac_rotation_deg: float = 6.0
    cardiac_scale: float = 0.05

    def validate(self, source: str = "phantom config") -> None:
        if self.image_size < 32:
            raise InputError(f"{source}: image_size must be >= 32, got {self.image_size}")
        if not self.pixel_spacing_mm > 0:
            raise InputError(f"{source}: pixel_spacing_mm must be > 0, got {self.pixel_spacing_mm}")
        fov_radius = self.image_size * self.pixel_spacing_mm / 2
        if fov_radius < self.eem_radius_mm[1] + 0.5:
            raise InputError(
                f"{source}: field of view radius {fov_radius:.2f} mm is too small for eem_radius_mm up to "
                f"{self.eem_radius_mm[1]} mm"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple) and value[0] > value[1]:
                raise InputError(f"{source}: {field.name} range {list(value)} has low > high")
            if field.name.endswith("probability") and not 0 <= value <= 1:
                raise InputError(f"{source}: {field.name} must be within [0, 1], got {value}")
            if isinstance(value, (int, float)) and (field.name.endswith("_per_10mm") or field.name.endswith("_per_frame")) and value < 0:
                raise InputError(f"{source}: {field.name} must be >= 0, got {value}")


PRESETS = {
    "default": PhantomConfig(),
    # Harder and fixed: calcium only a few dB above dense fibrous plaque, more look-alikes and noisier images.
    "benchmark": PhantomConfig(
        calcium_db=(9.0, 13.0),
        fibrous_db=(5.0, 9.0),
        fibrous_per_frame=1.2,
        bright_perivascular_per_frame=1.5,
        attenuated_plaque_probability=0.25,
        guidewire_probability=1.0,
        side_branches_per_10mm=0.8,
        noise_db=(-31.0, -25.0),
        lateral_psf_sigma_mm=(0.07, 0.13),
    ),
}
