"""Phantom knobs: one flat dataclass, and the presets built from it.

Every knob is a value or a (low, high) range; ranges are sampled once per case, so cases differ in anatomy and in
the scanner that imaged them, the way pullbacks from different patients and systems do (values follow
../shared/IVUS_PRIMER.md and the vendors' published specifications; see docs/phantom.md). Intensities are echo
amplitudes in dB relative to soft plaque at 20 MHz; attenuation is one-way, in dB per mm at 20 MHz.

Presets (docs/phantom.md lists what each one varies):
- `randomized` (the knobs' defaults): domain randomisation over scanners; the embedded training data.
- `default`: one scanner's look (a 20 MHz phased array at 500 x 500 px, 0.02 mm), same anatomy.
- `benchmark`: `randomized` with harder anatomy (calcium nearer dense fibrous plaque, more look-alikes). FROZEN:
  accuracy numbers are quoted on it (a test pins its knobs and a fingerprint of its frames).
- `shifted`: HELD OUT. The anatomy of `randomized` imaged by a scanner whose knobs on the axes in `SHIFTED_AXES`
  lie outside the training ranges; no training recipe may use it (it measures carry-over to an unseen look).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ivus_tf.core.errors import InputError

Range = tuple[float, float]
Knob = float | Range  # a fixed value, or a (low, high) range sampled per case
IntKnob = int | tuple[int, int]


def bounds(knob) -> tuple:
    """(low, high) of a knob (a fixed value v gives (v, v))."""
    return tuple(knob) if isinstance(knob, (tuple, list)) else (knob, knob)


@dataclass(frozen=True)
class PhantomConfig:
    # Frame geometry, per case: size (px) and spacing (mm) such that size x spacing lies in the field of view
    image_size: IntKnob = (256, 512)
    pixel_spacing_mm: Knob = (0.015, 0.045)
    field_of_view_mm: Knob = (8.0, 12.0)
    a_lines: IntKnob = (256, 768)
    square_fov_probability: float = 0.25  # the image fills the square (no black corners)
    # Pullback
    frame_spacing_mm: Knob = (0.4, 1.0)
    # Anatomy (mm)
    eem_radius_mm: Knob = (1.7, 2.6)
    plaque_burden: Knob = (0.35, 0.75)
    plaque_eccentricity: Knob = (0.1, 0.9)
    media_thickness_mm: Knob = (0.1, 0.25)
    adventitia_thickness_mm: Knob = (0.25, 0.5)
    # Calcium plates: a bright leading layer (what annotators outline) hiding the rest of the plate in its shadow
    calcium_segments_per_10mm: float = 1.2
    calcium_segment_length_mm: Knob = (3.0, 9.0)
    calcium_arc_deg: Knob = (10.0, 360.0)
    calcium_thickness_mm: Knob = (0.3, 1.0)
    calcium_layer_mm: Knob = (0.12, 0.3)
    calcium_db: Knob = (10.0, 14.0)
    calcium_shadow_db: Knob = (14.0, 30.0)
    reverberation_probability: float = 0.5
    # Spotty calcium: clusters of small thin spots with partial shadows
    spotty_calcium_per_10mm: float = 1.0
    # Look-alikes and artifacts
    fibrous_db: Knob = (4.0, 8.0)
    fibrous_per_frame: float = 0.8
    bright_perivascular_per_frame: float = 1.0
    attenuated_plaque_probability: float = 0.15
    guidewire_probability: float = 0.9
    side_branches_per_10mm: float = 0.6
    stent_probability: float = 0.12
    # Echo levels (dB re soft plaque at 20 MHz) and attenuation (dB/mm one-way at 20 MHz; grows with frequency)
    blood_db: Knob = (-26.0, -14.0)
    media_db: Knob = (-20.0, -14.0)
    adventitia_db: Knob = (6.0, 10.0)
    perivascular_db: Knob = (-8.0, -2.0)
    tissue_attenuation_db_per_mm: Knob = (0.8, 1.6)
    # Transducer: a 20 MHz phased array (ring-down) or a 35-60 MHz rotational catheter (sheath, bright blood)
    rotational_probability: float = 0.55
    phased_array_frequency_mhz: Knob = (18.0, 22.0)
    rotational_frequency_mhz: Knob = (35.0, 60.0)
    fractional_bandwidth: Knob = (0.35, 0.8)
    lateral_psf_sigma_mm: Knob = (0.06, 0.11)  # at 20 MHz; narrower at higher frequency
    catheter_radius_mm: Knob = (0.42, 0.55)
    ringdown_mm: Knob = (0.1, 0.45)
    ringdown_mask_probability: float = 0.35
    nurd_probability: float = 0.3  # rotational catheters only
    nurd_deg: Knob = (2.0, 12.0)
    # Receiver and display
    noise_db: Knob = (-40.0, -28.0)
    gain_db: Knob = (-10.0, 4.0)  # 0: soft plaque (near field) at mid-gray; higher shows more blood and noise
    dynamic_range_db: Knob = (45.0, 70.0)
    tgc_compensation: Knob = (0.5, 0.9)  # fraction of the tissue attenuation that the depth gain undoes
    tgc_ripple_db: Knob = (0.0, 4.0)
    display_gamma: Knob = (0.75, 1.4)
    display_reject: Knob = (0.0, 0.1)  # gray levels below this fraction shown black
    smoothing_px: Knob = (0.0, 1.2)
    sharpening: Knob = (0.0, 0.6)
    jpeg_probability: float = 0.3
    jpeg_quality: IntKnob = (60, 95)
    # Annotation: smooth per-annotator wobble of the drawn contours (labels only)
    annotation_jitter_mm: Knob = (0.0, 0.04)
    # Non-gated pullback: cardiac motion between frames
    cardiac_rotation_deg: float = 6.0
    cardiac_scale: float = 0.05

    def validate(self, source: str = "phantom config") -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            low, high = bounds(value)
            if low > high:
                raise InputError(f"{source}: {field.name} range {list(value)} has low > high")
            if field.name.endswith("probability") and not 0 <= value <= 1:
                raise InputError(f"{source}: {field.name} must be within [0, 1], got {value}")
            if (field.name.endswith(("_per_10mm", "_per_frame")) or field.name in POSITIVE) and low < 0:
                raise InputError(f"{source}: {field.name} must be >= 0, got {value}")
        if bounds(self.image_size)[0] < 32:
            raise InputError(f"{source}: image_size must be >= 32, got {self.image_size}")
        if not bounds(self.pixel_spacing_mm)[0] > 0 or not bounds(self.a_lines)[0] >= 64:
            raise InputError(f"{source}: pixel_spacing_mm must be > 0 and a_lines >= 64")
        (size_lo, size_hi), (sp_lo, sp_hi) = bounds(self.image_size), bounds(self.pixel_spacing_mm)
        fov_lo, fov_hi = bounds(self.field_of_view_mm)
        if size_lo * sp_hi < fov_lo or size_hi * sp_lo > fov_hi:
            raise InputError(f"{source}: image_size {self.image_size} x pixel_spacing_mm {self.pixel_spacing_mm} "
                             f"cannot always give a field of view within field_of_view_mm {self.field_of_view_mm}")
        if max(fov_lo, size_lo * sp_lo) / 2 < bounds(self.eem_radius_mm)[1] + 0.5:
            raise InputError(f"{source}: a field of view of {max(fov_lo, size_lo * sp_lo):.2f} mm is too small "
                             f"for eem_radius_mm up to {bounds(self.eem_radius_mm)[1]} mm")
        if not 0 <= bounds(self.display_reject)[1] < 1 or bounds(self.display_gamma)[0] <= 0:
            raise InputError(f"{source}: display_reject must be within [0, 1) and display_gamma > 0")


POSITIVE = ("frame_spacing_mm", "eem_radius_mm", "plaque_burden", "media_thickness_mm", "adventitia_thickness_mm",
            "calcium_segment_length_mm", "calcium_arc_deg", "calcium_thickness_mm", "calcium_layer_mm",
            "calcium_shadow_db", "fractional_bandwidth", "lateral_psf_sigma_mm", "catheter_radius_mm", "ringdown_mm",
            "nurd_deg", "dynamic_range_db", "tgc_compensation", "tgc_ripple_db", "smoothing_px", "sharpening",
            "jpeg_quality", "annotation_jitter_mm", "phased_array_frequency_mhz", "rotational_frequency_mhz")

_RANDOMIZED = PhantomConfig()

# The axes on which `shifted` lies outside the training presets' ranges (tested).
SHIFTED_AXES = ("field_of_view_mm", "image_size", "fractional_bandwidth", "display_gamma", "dynamic_range_db")

PRESETS = {
    "randomized": _RANDOMIZED,
    # One scanner: a 20 MHz phased array (ring-down shown), 500 x 500 px at 0.02 mm, a plain display.
    "default": dataclasses.replace(
        _RANDOMIZED, image_size=500, pixel_spacing_mm=0.02, field_of_view_mm=10.0, a_lines=1024,
        square_fov_probability=0.0, rotational_probability=0.0, phased_array_frequency_mhz=20.0,
        fractional_bandwidth=(0.5, 0.6), catheter_radius_mm=0.48, ringdown_mm=(0.25, 0.35),
        ringdown_mask_probability=0.0, noise_db=(-36.0, -32.0), gain_db=(-4.0, 0.0), dynamic_range_db=(50.0, 58.0),
        tgc_compensation=(0.7, 0.8), tgc_ripple_db=0.0, display_gamma=1.0, display_reject=0.0, smoothing_px=0.0,
        sharpening=0.0, jpeg_probability=0.0),
    # Harder, and frozen: calcium only a few dB above dense fibrous plaque, more look-alikes.
    "benchmark": dataclasses.replace(
        _RANDOMIZED, calcium_db=(9.0, 13.0), fibrous_db=(5.0, 9.0), fibrous_per_frame=1.2,
        bright_perivascular_per_frame=1.5, attenuated_plaque_probability=0.25, guidewire_probability=1.0,
        side_branches_per_10mm=0.8, stent_probability=0.2, spotty_calcium_per_10mm=1.5),
    # Held out: the same anatomy seen by a 30 MHz broadband rotational system with a wide 14-16 mm field of view
    # on large frames and a soft, washed-out display (low gamma, wide dynamic range).
    "shifted": dataclasses.replace(
        _RANDOMIZED, image_size=(576, 640), pixel_spacing_mm=(0.022, 0.028), field_of_view_mm=(14.0, 16.0),
        rotational_probability=1.0, rotational_frequency_mhz=(28.0, 32.0), fractional_bandwidth=(0.9, 1.0),
        display_gamma=(0.5, 0.6), dynamic_range_db=(74.0, 80.0)),
}
TRAINING_PRESETS = ("randomized", "default", "benchmark")
HELD_OUT_PRESETS = ("shifted",)
