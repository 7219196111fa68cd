"""Phantom acoustics: tissue map -> A-lines (polar, depth x angle) -> B-mode frame (Cartesian, uint8).

Per A-line (a ray from the transducer at the catheter surface), each depth sample gets
- an echo amplitude from its tissue class (dB, per-case levels, plus a heterogeneous texture field),
- two-way attenuation integrated from the catheter outwards (dB/mm per class). Calcium and the guidewire
  reflect almost everything: behind the visible bright layer the beam loses tens of dB, hence the ACOUSTIC SHADOW;
- fully developed speckle: complex Gaussian scatterers convolved with the point-spread function, short along the
  radius (axial) and long along the arc (lateral, widening with depth), so the grain is correlated, not white;
- coherent echoes: the specular leading edge of calcium, reverberations (fainter copies of a hard echo at
  multiples of its distance from the transducer), and the catheter ring-down;
then electronic noise, envelope detection with a light video filter, depth gain (TGC) that partly compensates tissue attenuation (the far field stays darker and
noisier), log compression to the displayed dynamic range, and scan conversion to a square frame with the catheter
at its centre.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d, map_coordinates

from tfrecords_builder.phantom import anatomy as A

# Per class: echo level (dB re soft plaque; None -> from the case's acoustics), attenuation as a multiple of the
# case's tissue attenuation, texture strength (dB), extra one-way loss (dB) at the class's far side.
_CLASS_TABLE = {
    A.CATHETER: (-120.0, 0.0, 0.0, 0.0),
    A.BLOOD: ("blood_db", 0.1, 1.0, 0.0),
    A.PLAQUE: (0.0, 1.0, 3.0, 0.0),
    A.FIBROUS: (0.0, 1.6, 1.5, 0.0),  # level from the deposit
    A.LIPID: (-14.0, 1.2, 2.0, 0.0),
    A.ATTENUATING: (-3.0, 9.0, 2.0, 0.0),
    A.CALCIUM: (0.0, 12.0, 1.5, 16.0),  # level from the deposit; shadow starts behind the bright layer
    A.MEDIA: ("media_db", 1.0, 1.0, 0.0),
    A.ADVENTITIA: ("adventitia_db", 1.5, 2.5, 0.0),
    A.PERIVASCULAR: ("perivascular_db", 1.0, 5.0, 0.0),
    A.BRIGHT_PERIVASCULAR: (0.0, 2.0, 2.0, 0.0),  # level from the blob
    A.VEIN: ("blood_db", 0.1, 1.0, 0.0),
    A.PERICARDIUM: (0.0, 3.0, 2.0, 0.0),  # level from the blob
    A.GUIDEWIRE: (14.0, 0.0, 0.0, 24.0),
}
DEPTH_SAMPLE_FRACTION = 0.8  # depth step as a fraction of the pixel spacing
DISPLAY_TOP_DB = 28.0  # echo level (dB re soft plaque) shown as white at zero gain


def _class_arrays(acoustics: dict):
    n = len(A.CLASS_NAMES)
    level, attenuation, texture, exit_loss = (np.zeros(n, np.float32) for _ in range(4))
    for cls, (lv, att, tex, loss) in _CLASS_TABLE.items():
        level[cls] = acoustics[lv] if isinstance(lv, str) else lv
        attenuation[cls], texture[cls], exit_loss[cls] = att, tex, loss
    return level, attenuation, texture, exit_loss


@lru_cache(maxsize=8)
def polar_grid(image_size: int, pixel_spacing_mm: float, a_lines: int):
    """Sample positions of the A-lines: x, y (mm; shape a_lines x depth), depth step (mm), depths (mm)."""
    radius_mm = image_size * pixel_spacing_mm / 2
    step = pixel_spacing_mm * DEPTH_SAMPLE_FRACTION
    depth = np.arange(int(np.ceil(radius_mm / step)) + 2) * step
    theta = 2 * np.pi * np.arange(a_lines) / a_lines
    return np.cos(theta)[:, None] * depth, np.sin(theta)[:, None] * depth, step, depth


@lru_cache(maxsize=8)
def _scan_maps(image_size: int, pixel_spacing_mm: float, a_lines: int):
    x_mm, y_mm = pixel_grid_mm(image_size, pixel_spacing_mm)
    step = pixel_spacing_mm * DEPTH_SAMPLE_FRACTION
    map_depth = (np.hypot(x_mm, y_mm) / step).astype(np.float32)
    map_line = (np.mod(np.arctan2(y_mm, x_mm), 2 * np.pi) * a_lines / (2 * np.pi)).astype(np.float32)
    return cv2.convertMaps(map_depth, map_line, cv2.CV_16SC2)


@lru_cache(maxsize=8)
def pixel_grid_mm(image_size: int, pixel_spacing_mm: float):
    """Pixel-centre coordinates in mm, catheter (rotation axis) at the image centre; x to the right, y down."""
    centre = (image_size - 1) / 2
    coords = (np.arange(image_size) - centre) * pixel_spacing_mm
    return np.meshgrid(coords, coords)


def _texture(rng: np.random.Generator, x_mm, y_mm, radius_mm: float, scales_mm=(0.12, 0.45)):
    """Unit-variance heterogeneous tissue texture (mix of a fine and a coarse Gaussian random field)."""
    grid_mm = 0.04
    n = int(np.ceil(2 * radius_mm / grid_mm)) + 1
    out = 0
    for weight, scale in zip((0.6, 0.8), scales_mm):
        noise = gaussian_filter(rng.standard_normal((n, n)), scale / grid_mm, mode="wrap")
        noise /= noise.std() + 1e-12
        out = out + weight * map_coordinates(noise, [(y_mm + radius_mm) / grid_mm, (x_mm + radius_mm) / grid_mm],
                                             order=1, mode="nearest")
    return out


def _first_index(mask: np.ndarray) -> np.ndarray:
    """Per row, the first column where `mask` is true (-1 where none)."""
    has = mask.any(axis=1)
    return np.where(has, mask.argmax(axis=1), -1)


def render_frame(anat: "A.FrameAnatomy", acoustics: dict, image_size: int, pixel_spacing_mm: float,
                 a_lines: int, rng: np.random.Generator) -> np.ndarray:
    """B-mode frame (image_size x image_size, uint8) of one frame's anatomy."""
    x, y, step, depth = polar_grid(image_size, pixel_spacing_mm, a_lines)
    cls, level_offset = A.classify(anat, x, y)
    level, attenuation, texture, exit_loss = _class_arrays(acoustics)
    radius_mm = image_size * pixel_spacing_mm / 2

    echo_db = level[cls] + level_offset + texture[cls] * _texture(rng, x, y, radius_mm)
    att_db = attenuation[cls] * acoustics["tissue_attenuation_db_per_mm"] * step
    leaving = np.zeros_like(cls, dtype=bool)
    leaving[:, :-1] = cls[:, :-1] != cls[:, 1:]
    att_db = att_db + np.where(leaving, exit_loss[cls], 0)
    loss_db = 2 * (np.cumsum(att_db, axis=1) - att_db)
    amplitude = 10 ** ((echo_db - loss_db) / 20)
    field = amplitude * (rng.standard_normal(cls.shape) + 1j * rng.standard_normal(cls.shape)) / np.sqrt(2)
    coherent = _coherent_echoes(anat, cls, amplitude, depth, step, rng, acoustics["axial_psf_sigma_mm"] / step)
    field = _psf(field, anat, acoustics, depth, step, a_lines, speckle=True)
    field += _psf(coherent, anat, acoustics, depth, step, a_lines, speckle=False)
    noise = 10 ** (acoustics["noise_db"] / 20) / np.sqrt(2)
    field += noise * (rng.standard_normal(cls.shape) + 1j * rng.standard_normal(cls.shape))
    tgc_db = 2 * 0.7 * acoustics["tissue_attenuation_db_per_mm"] * np.maximum(depth - anat.catheter_radius_mm, 0)
    envelope = gaussian_filter(np.abs(field), (1.2, 0.8), mode=("wrap", "nearest"))  # the scanner's video filter
    echo = 20 * np.log10(envelope + 1e-12) + tgc_db
    top = DISPLAY_TOP_DB - acoustics["gain_db"]
    gray = np.clip((echo - (top - acoustics["dynamic_range_db"])) / acoustics["dynamic_range_db"], 0, 1) * 255
    gray[cls == A.CATHETER] = 0
    return _scan_convert(gray.astype(np.float32), image_size, pixel_spacing_mm, a_lines)


def _coherent_echoes(anat, cls, amplitude, depth, step, rng, sigma_axial):
    """Specular calcium edges, reverberations behind calcium (where it reverberates) and the guidewire, ring-down.

    Edges are single-sample reflectors, scaled so that their peak after the axial PSF equals the given amplitude.
    """
    lines, samples = cls.shape
    out = np.zeros(cls.shape, np.complex128)
    rows = np.arange(lines)
    phase = np.exp(1j * np.cumsum(rng.normal(0, 0.25, lines)))
    theta = 2 * np.pi * rows / lines
    for kind, edge_gain, bounce_db, always in ((A.CALCIUM, 2.0, 20.0, False), (A.GUIDEWIRE, 3.0, 18.0, True)):
        first = _first_index(cls == kind)
        hit = first >= 0
        if not hit.any():
            continue
        r_idx, k_idx = rows[hit], first[hit]
        edge = edge_gain * amplitude[r_idx, k_idx] * rng.uniform(0.6, 1.2, r_idx.size) * np.sqrt(2 * np.pi) * sigma_axial
        out[r_idx, k_idx] += edge * phase[r_idx]
        if always:
            echoes = np.ones(r_idx.size, bool)
        else:  # does the calcium deposit seen along this line reverberate?
            ax, ay = A._anatomy_coords(anat, depth[k_idx] * np.cos(theta[r_idx]), depth[k_idx] * np.sin(theta[r_idx]))
            _, phi = A._to_vessel(ax, ay, anat.center_mm, anat.scale)
            echoes = anat.reverberating[np.round(np.mod(phi, 2 * np.pi) / (2 * np.pi) * A.N_PHI).astype(int) % A.N_PHI]
        gap = depth[k_idx] - anat.catheter_radius_mm
        for n in range(1, 3):
            k_rev = np.round((depth[k_idx] + n * gap) / step).astype(int)
            ok = echoes & (k_rev < samples)
            out[r_idx[ok], k_rev[ok]] += edge[ok] * 10 ** (-n * bounce_db / 20) * phase[r_idx[ok]]
    ring = (depth >= anat.catheter_radius_mm) & (depth < anat.catheter_radius_mm + 0.3)
    d = depth[ring] - anat.catheter_radius_mm
    profile = 10 ** (10 / 20) * np.exp(-d / 0.1) * (0.6 + 0.4 * np.cos(2 * np.pi * d / 0.07))
    around = 1 + 0.3 * gaussian_filter1d(rng.standard_normal(lines), 6, mode="wrap") * 3
    out[:, ring] += np.clip(around, 0.3, None)[:, None] * profile[None, :] * phase[:, None]
    return out


def _psf(field, anat, acoustics, depth, step, a_lines, speckle: bool):
    """Axial Gaussian along depth; lateral Gaussian along the arc, its width in mm growing with depth.

    Speckle (random scatterers) is normalised to keep its mean power; coherent echoes pass with unit gain.
    """
    sigma_axial = acoustics["axial_psf_sigma_mm"] / step
    field = gaussian_filter1d(field.real, sigma_axial, axis=1) + 1j * gaussian_filter1d(field.imag, sigma_axial, axis=1)
    if speckle:
        field *= np.sqrt(2 * np.sqrt(np.pi) * sigma_axial)
    lateral_mm = acoustics["lateral_psf_sigma_mm"] * (0.7 + 0.3 * depth / 1.5)
    sigma_lines = lateral_mm / np.maximum(depth, anat.catheter_radius_mm) * a_lines / (2 * np.pi)
    freq = np.fft.fftfreq(a_lines)[:, None]
    transfer = np.exp(-2 * (np.pi * freq * sigma_lines[None, :]) ** 2)
    if speckle:
        transfer = transfer * np.sqrt(np.maximum(2 * np.sqrt(np.pi) * sigma_lines, 1.0))[None, :]
    return np.fft.ifft(np.fft.fft(field, axis=0) * transfer, axis=0)


def _scan_convert(gray: np.ndarray, image_size: int, pixel_spacing_mm: float, a_lines: int) -> np.ndarray:
    padded = np.concatenate([gray, gray[:1]], axis=0)  # wrap the seam at angle 0
    map1, map2 = _scan_maps(image_size, pixel_spacing_mm, a_lines)
    image = cv2.remap(padded, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x_mm, y_mm = pixel_grid_mm(image_size, pixel_spacing_mm)
    image[np.hypot(x_mm, y_mm) > image_size * pixel_spacing_mm / 2] = 0
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
