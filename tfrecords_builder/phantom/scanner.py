"""The scanner of one case: transducer, receiver, display and frame geometry, drawn from the knobs' ranges.

Domain randomisation: each pullback is imaged by its own system. A 20 MHz phased array (coarse speckle, a bright
ring-down halo around the catheter, dark blood) or a 35-60 MHz rotational catheter (fine speckle, a thin sheath
ring, blood speckle that turns the lumen grey, possible non-uniform rotation); then its own gain, depth gain,
dynamic range, display curve, post-processing, frame size, pixel spacing and field of view. Resolution follows the
physics: axial PSF sigma = 0.32 wavelength / fractional bandwidth (a Gaussian pulse), lateral PSF narrower at
higher frequency; blood backscatter grows faster with frequency than tissue's (Rayleigh scattering), tissue
attenuation grows linearly with it.

The scanner is drawn from its own random stream, so a case's anatomy is the same whatever the scanner knobs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

from tfrecords_builder.phantom.config import PhantomConfig, bounds

SPEED_OF_SOUND_MM_PER_US = 1.54
DEPTH_SAMPLE_FRACTION = 0.8  # depth step of the A-lines as a fraction of the pixel spacing


def uniform(rng: np.random.Generator, knob) -> float:
    low, high = bounds(knob)
    return float(rng.uniform(low, high)) if high > low else float(low)


def integer(rng: np.random.Generator, knob, multiple: int = 1) -> int:
    low, high = bounds(knob)
    return int(round(rng.uniform(low, high) / multiple) * multiple) if high > low else int(low)


@dataclass(frozen=True)
class Scanner:
    """Everything about how one case is imaged (JSON-ready via `describe`)."""

    kind: str  # "phased_array" or "rotational"
    frequency_mhz: float
    fractional_bandwidth: float
    axial_psf_sigma_mm: float
    lateral_psf_sigma_mm: float
    image_size: int
    pixel_spacing_mm: float
    a_lines: int
    square_fov: bool
    catheter_radius_mm: float
    catheter_look: str  # "ringdown", "sheath" or "masked"
    ringdown_mm: float
    mask_radius_mm: float
    nurd: tuple  # (a1, p1, a2, p2): `nurd_angle`
    noise_db: float
    gain_db: float
    dynamic_range_db: float
    tgc_compensation: float
    tgc_ripple: tuple  # (amplitude dB, wavelength mm, phase)
    display_gamma: float
    display_reject: float
    smoothing_px: float
    sharpening: float
    jpeg_quality: int  # 0: no JPEG compression

    @property
    def field_of_view_mm(self) -> float:
        return self.image_size * self.pixel_spacing_mm

    @property
    def blood_gain_db(self) -> float:
        """Blood (Rayleigh, ~f^4) brightens faster with frequency than tissue (~f^2): relative gain vs 20 MHz."""
        return 20 * np.log10(self.frequency_mhz / 20.0)

    @property
    def attenuation_scale(self) -> float:
        return (self.frequency_mhz / 20.0) ** 0.7

    def describe(self) -> dict:
        """JSON-ready: every field, plus the field of view (mm)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["field_of_view_mm"] = self.field_of_view_mm
        return out


def sample_scanner(config: PhantomConfig, rng: np.random.Generator) -> Scanner:
    """Draw one case's scanner from the knobs (all draws happen, whatever the kind, so streams stay aligned)."""
    rotational = rng.random() < config.rotational_probability
    f_pa, f_rot = uniform(rng, config.phased_array_frequency_mhz), uniform(rng, config.rotational_frequency_mhz)
    frequency = f_rot if rotational else f_pa
    bandwidth = uniform(rng, config.fractional_bandwidth)
    wavelength_mm = SPEED_OF_SOUND_MM_PER_US / frequency
    lateral = uniform(rng, config.lateral_psf_sigma_mm) * (20.0 / frequency) ** 0.6
    size = integer(rng, config.image_size, 2)
    (sp_lo, sp_hi), (fov_lo, fov_hi) = bounds(config.pixel_spacing_mm), bounds(config.field_of_view_mm)
    low = max(sp_lo, fov_lo / size)
    spacing = round(uniform(rng, (low, max(low, min(sp_hi, fov_hi / size)))), 6)
    a_lines = integer(rng, config.a_lines, 64)
    square = rng.random() < config.square_fov_probability
    catheter = uniform(rng, config.catheter_radius_mm)
    masked = rng.random() < config.ringdown_mask_probability
    ringdown = uniform(rng, config.ringdown_mm) * (1.0 if not rotational else 0.5)
    mask_radius = catheter + rng.uniform(0.5, 1.0) * ringdown
    nurd_on = rotational and rng.random() < config.nurd_probability
    amplitude = np.deg2rad(uniform(rng, config.nurd_deg))
    split = rng.uniform(0, 1)
    nurd = (amplitude * split, rng.uniform(0, 2 * np.pi), amplitude * (1 - split) / 2, rng.uniform(0, 2 * np.pi))
    jpeg = rng.random() < config.jpeg_probability
    return Scanner(
        kind="rotational" if rotational else "phased_array", frequency_mhz=frequency, fractional_bandwidth=bandwidth,
        axial_psf_sigma_mm=0.32 * wavelength_mm / bandwidth, lateral_psf_sigma_mm=lateral, image_size=size,
        pixel_spacing_mm=spacing, a_lines=a_lines, square_fov=bool(square), catheter_radius_mm=catheter,
        catheter_look="masked" if masked else ("sheath" if rotational else "ringdown"), ringdown_mm=ringdown,
        mask_radius_mm=mask_radius if masked else 0.0, nurd=tuple(float(v) for v in nurd) if nurd_on else (0.0,) * 4,
        noise_db=uniform(rng, config.noise_db), gain_db=uniform(rng, config.gain_db),
        dynamic_range_db=uniform(rng, config.dynamic_range_db), tgc_compensation=uniform(rng, config.tgc_compensation),
        tgc_ripple=(uniform(rng, config.tgc_ripple_db), float(rng.uniform(1.5, 5.0)), float(rng.uniform(0, 2 * np.pi))),
        display_gamma=uniform(rng, config.display_gamma), display_reject=uniform(rng, config.display_reject),
        smoothing_px=uniform(rng, config.smoothing_px), sharpening=uniform(rng, config.sharpening),
        jpeg_quality=integer(rng, config.jpeg_quality) if jpeg else 0,
    )


def nurd_angle(scanner: Scanner, theta: np.ndarray) -> np.ndarray:
    """The true angle of the tissue shown at displayed angle `theta` (monotonic: |a1| + 2|a2| < 1)."""
    a1, p1, a2, p2 = scanner.nurd
    return theta + a1 * np.sin(theta + p1) + a2 * np.sin(2 * theta + p2)


def fov_radius_mm(scanner: Scanner) -> float:
    """Depth the A-lines reach: the disc's radius, or the half-diagonal when the image fills the square."""
    radius = scanner.field_of_view_mm / 2
    return radius * np.sqrt(2) if scanner.square_fov else radius


def polar_grid(scanner: Scanner):
    """A-line sample positions (x, y in mm, shape a_lines x depth; NURD included), depth step and depths (mm)."""
    step = scanner.pixel_spacing_mm * DEPTH_SAMPLE_FRACTION
    depth = np.arange(int(np.ceil(fov_radius_mm(scanner) / step)) + 2) * step
    theta = nurd_angle(scanner, 2 * np.pi * np.arange(scanner.a_lines) / scanner.a_lines)
    return np.cos(theta)[:, None] * depth, np.sin(theta)[:, None] * depth, step, depth


@lru_cache(maxsize=16)
def pixel_grid_mm(image_size: int, pixel_spacing_mm: float):
    """Pixel-centre coordinates in mm, catheter (rotation axis) at the image centre; x to the right, y down."""
    centre = (image_size - 1) / 2
    coords = (np.arange(image_size) - centre) * pixel_spacing_mm
    return np.meshgrid(coords, coords)


def label_grid_mm(scanner: Scanner):
    """Where the tissue shown at each pixel really is (mm): the pixel grid, rotated by NURD where there is some."""
    x, y = pixel_grid_mm(scanner.image_size, scanner.pixel_spacing_mm)
    if not any(scanner.nurd):
        return x, y
    radius, theta = np.hypot(x, y), nurd_angle(scanner, np.arctan2(y, x))
    return radius * np.cos(theta), radius * np.sin(theta)


@lru_cache(maxsize=16)
def scan_maps(image_size: int, pixel_spacing_mm: float, a_lines: int):
    """cv2.remap maps from the polar A-line image (a_lines + 1 wrapped rows x depth) to the square frame."""
    x_mm, y_mm = pixel_grid_mm(image_size, pixel_spacing_mm)
    step = pixel_spacing_mm * DEPTH_SAMPLE_FRACTION
    map_depth = (np.hypot(x_mm, y_mm) / step).astype(np.float32)
    map_line = (np.mod(np.arctan2(y_mm, x_mm), 2 * np.pi) * a_lines / (2 * np.pi)).astype(np.float32)
    return cv2.convertMaps(map_depth, map_line, cv2.CV_16SC2)
