"""Phantom acoustics: tissue map -> A-lines (polar, angle x depth) -> echo in dB after depth gain.

Per A-line (a ray from the transducer at the catheter), each depth sample gets
- an echo amplitude from its tissue class (dB, per-case levels, plus a heterogeneous texture field); blood is
  brighter at higher frequency (`Scanner.blood_gain_db`), tissue attenuation grows with frequency;
- two-way attenuation integrated from the catheter outwards (dB/mm per class). Calcium's leading layer, stent
  struts and the guidewire reflect almost everything: behind them the beam loses tens of dB, hence the ACOUSTIC
  SHADOW (partial behind thin calcium spots);
- fully developed speckle: complex Gaussian scatterers convolved with the point-spread function, short along the
  radius (axial, set by frequency and bandwidth) and long along the arc (lateral, widening with depth);
- coherent echoes: specular leading edges, reverberations (fainter copies of a hard echo at multiples of its
  distance from the transducer), and the catheter: a ring-down halo (phased array) or a sheath ring (rotational);
then electronic noise, envelope detection with a light video filter and the scanner's depth gain (TGC), which
partly undoes tissue attenuation (the far field stays darker and noisier). `display.py` turns it into a frame.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from tfrecords_builder.phantom import anatomy as A
from tfrecords_builder.phantom.scanner import Scanner

# Per class: echo level (dB re soft plaque; a name -> from the case's acoustics), attenuation as a multiple of the
# case's tissue attenuation, texture strength (dB), extra one-way loss (dB) at the class's far side
# (calcium: per deposit, from `classify`).
_CLASS_TABLE = {
    A.CATHETER: (-120.0, 0.0, 0.0, 0.0),
    A.BLOOD: ("blood_db", 0.1, 2.5, 0.0),
    A.PLAQUE: (0.0, 1.0, 3.0, 0.0),
    A.FIBROUS: (0.0, 1.6, 1.5, 0.0),  # level from the deposit
    A.LIPID: (-14.0, 1.2, 2.0, 0.0),
    A.ATTENUATING: (-3.0, 9.0, 2.0, 0.0),
    A.CALCIUM: (0.0, 12.0, 1.5, 0.0),  # level and shadow from the deposit
    A.MEDIA: ("media_db", 1.0, 1.0, 0.0),
    A.ADVENTITIA: ("adventitia_db", 1.5, 2.5, 0.0),
    A.PERIVASCULAR: ("perivascular_db", 1.0, 5.0, 0.0),
    A.BRIGHT_PERIVASCULAR: (0.0, 2.0, 2.0, 0.0),  # level from the blob
    A.VEIN: ("blood_db", 0.1, 2.5, 0.0),
    A.PERICARDIUM: (0.0, 3.0, 2.0, 0.0),  # level from the blob
    A.GUIDEWIRE: (14.0, 0.0, 0.0, 24.0),
    A.CALCIUM_HIDDEN: (0.0, 12.0, 1.5, 0.0),
    A.STRUT: (20.0, 0.0, 0.0, 16.0),
}
HIDDEN_BEHIND_DB = 8.0  # calcium behind more than this one-way loss at other calcium is not seen, not labelled


def _class_arrays(acoustics: dict, scanner: Scanner):
    n = len(A.CLASS_NAMES)
    level, attenuation, texture, exit_loss = (np.zeros(n, np.float32) for _ in range(4))
    for cls, (lv, att, tex, loss) in _CLASS_TABLE.items():
        level[cls] = acoustics[lv] if isinstance(lv, str) else lv
        attenuation[cls], texture[cls], exit_loss[cls] = att, tex, loss
    level[[A.BLOOD, A.VEIN]] += scanner.blood_gain_db
    return level, attenuation * acoustics["tissue_attenuation_db_per_mm"] * scanner.attenuation_scale, texture, \
        exit_loss


def _texture(rng: np.random.Generator, x_mm, y_mm, radius_mm: float, scales_mm=(0.12, 0.45)):
    """Unit-variance heterogeneous tissue texture (mix of a fine and a coarse Gaussian random field), float32."""
    grid_mm = 0.04
    n = int(np.ceil(2 * radius_mm / grid_mm)) + 1
    map_x = ((x_mm + radius_mm) / grid_mm).astype(np.float32)
    map_y = ((y_mm + radius_mm) / grid_mm).astype(np.float32)
    out = 0
    for weight, scale in zip((0.6, 0.8), scales_mm):
        noise = cv2.GaussianBlur(rng.standard_normal((n, n), dtype=np.float32), (0, 0), scale / grid_mm,
                                 borderType=cv2.BORDER_REFLECT)
        noise *= np.float32(weight / (noise.std() + 1e-12))
        out = out + cv2.remap(noise, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def _blur(field: np.ndarray, sigma_lines: float, sigma_depth: float) -> np.ndarray:
    """Gaussian blur of a float32 polar image (lines x depth); sigma 0 leaves an axis alone."""
    return cv2.GaussianBlur(field, (0 if sigma_depth else 1, 0 if sigma_lines else 1), sigmaX=sigma_depth or 0.1,
                            sigmaY=sigma_lines, borderType=cv2.BORDER_REFLECT)


def _complex_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Circular complex Gaussian samples of unit mean power (complex64)."""
    noise = rng.standard_normal((2,) + tuple(shape), dtype=np.float32) * np.float32(np.sqrt(0.5))
    return noise[0] + 1j * noise[1]


def _first_index(mask: np.ndarray) -> np.ndarray:
    """Per row, the first column where `mask` is true (-1 where none)."""
    has = mask.any(axis=1)
    return np.where(has, mask.argmax(axis=1), -1)


def tgc_db(scanner: Scanner, acoustics: dict, depth: np.ndarray) -> np.ndarray:
    """The scanner's depth gain (dB): a fraction of the expected two-way tissue loss, plus a slow ripple."""
    tissue = acoustics["tissue_attenuation_db_per_mm"] * scanner.attenuation_scale
    beyond = np.maximum(depth - scanner.catheter_radius_mm, 0)
    amplitude, wavelength, phase = scanner.tgc_ripple
    return 2 * scanner.tgc_compensation * tissue * beyond + amplitude * np.sin(2 * np.pi * beyond / wavelength + phase)


def render_polar(anat: A.FrameAnatomy, acoustics: dict, scanner: Scanner, grid, rng: np.random.Generator):
    """Echo (dB, after depth gain) on the A-line grid (a_lines x depth), and where calcium lies hidden in the shadow
    of other calcium nearer the catheter (invisible, so nobody outlines it)."""
    x, y, step, depth = grid
    cls, level_offset, shadow_db = A.classify(anat, x, y)
    level, attenuation, texture, exit_loss = _class_arrays(acoustics, scanner)
    radius_mm = float(depth[-1])

    echo_db = level[cls] + level_offset + texture[cls] * _texture(rng, x, y, radius_mm).astype(np.float32)
    att_db = attenuation[cls] * np.float32(step)
    leaving = np.zeros_like(cls, dtype=bool)
    leaving[:, :-1] = cls[:, :-1] != cls[:, 1:]
    calcium_exit_db = np.where(leaving, shadow_db, 0)  # annotators bridge the small shadows of wires and struts
    hidden = (cls == A.CALCIUM) & (np.cumsum(calcium_exit_db, axis=1) - calcium_exit_db > HIDDEN_BEHIND_DB)
    att_db = att_db + np.where(leaving, exit_loss[cls], 0) + calcium_exit_db
    loss_db = 2 * (np.cumsum(att_db, axis=1) - att_db)
    amplitude = (10 ** ((echo_db - loss_db) / 20)).astype(np.float32)
    field = amplitude * _complex_noise(rng, cls.shape)
    sigma_axial = scanner.axial_psf_sigma_mm / step
    coherent = _coherent_echoes(anat, cls, amplitude, x, y, depth, step, rng, max(sigma_axial, 0.5), scanner)
    field = _psf(field, scanner, depth, sigma_axial, speckle=True)
    field += _psf(coherent, scanner, depth, sigma_axial, speckle=False)
    field += np.float32(10 ** (scanner.noise_db / 20)) * _complex_noise(rng, cls.shape)
    envelope = _blur(np.abs(field), 1.0, 0.7)  # the scanner's video filter
    return 20 * np.log10(envelope + 1e-12) + tgc_db(scanner, acoustics, depth), hidden


def _coherent_echoes(anat, cls, amplitude, x, y, depth, step, rng, sigma_axial, scanner: Scanner):
    """Specular edges of calcium, struts and the guidewire with their reverberations; the catheter's echoes.

    Edges are single-sample reflectors, scaled so that their peak after the axial PSF equals the given amplitude.
    """
    lines, samples = cls.shape
    out = np.zeros(cls.shape, np.complex64)
    rows = np.arange(lines)
    phase = np.exp(1j * np.cumsum(rng.normal(0, 0.25, lines)))
    for kind, edge_gain, bounce_db, bounces in ((A.CALCIUM, 2.0, 20.0, 2), (A.GUIDEWIRE, 3.0, 18.0, 2),
                                                (A.STRUT, 5.0, 36.0, 1)):
        first = _first_index(cls == kind)
        hit = first >= 0
        if not hit.any():
            continue
        r_idx, k_idx = rows[hit], first[hit]
        jitter = rng.uniform(0.6, 1.2, r_idx.size)
        edge = edge_gain * amplitude[r_idx, k_idx] * jitter * np.sqrt(2 * np.pi) * sigma_axial
        out[r_idx, k_idx] += edge * phase[r_idx]
        if kind != A.CALCIUM:
            echoes = np.ones(r_idx.size, bool)
        else:  # does the calcium deposit seen along this line reverberate?
            _, _, _, phi, _ = A.vessel_fields(anat, x[r_idx, k_idx], y[r_idx, k_idx])
            echoes = anat.reverberating[np.round(np.mod(phi, 2 * np.pi) / (2 * np.pi) * A.N_PHI).astype(int) % A.N_PHI]
        gap = depth[k_idx] - transducer_radius_mm(scanner)
        for n in range(1, bounces + 1):
            k_rev = np.round((depth[k_idx] + n * gap) / step).astype(int)
            ok = echoes & (k_rev < samples)
            out[r_idx[ok], k_rev[ok]] += edge[ok] * 10 ** (-n * bounce_db / 20) * phase[r_idx[ok]]
    around = np.clip(1 + 0.9 * gaussian_filter1d(rng.standard_normal(lines), 4, mode="wrap"), 0.3, None)
    for start, extent, level_db, decay in _catheter_echoes(scanner, rng):
        ring = (depth >= start) & (depth < start + extent)
        d = depth[ring] - start
        profile = 10 ** (level_db / 20) * np.exp(-d / decay) * (0.6 + 0.4 * np.cos(2 * np.pi * d / 0.07))
        out[:, ring] += around[:, None] * profile[None, :] * phase[:, None]
    return out


def _catheter_echoes(scanner: Scanner, rng: np.random.Generator):
    """(start mm, extent mm, level dB, decay mm) of the catheter's echoes: a phased array's ring-down halo, or a
    rotational catheter's transducer ring-down (inside the catheter) and its sheath with one echo of it."""
    r = scanner.catheter_radius_mm
    if scanner.kind == "phased_array":
        return [(r, scanner.ringdown_mm, 10.0, scanner.ringdown_mm / 2.5)]
    inner = transducer_radius_mm(scanner)
    return [(inner, scanner.ringdown_mm, 8.0, scanner.ringdown_mm / 3), (r - 0.03, 0.04, 12.0, 0.03),
            (2 * r - inner - 0.03, 0.04, 2.0, 0.03)]


def transducer_radius_mm(scanner: Scanner) -> float:
    """Where the beam starts: the catheter surface (phased array) or the spinning core inside the sheath."""
    return scanner.catheter_radius_mm * (1.0 if scanner.kind == "phased_array" else 0.45)


def _psf(field, scanner: Scanner, depth, sigma_axial: float, speckle: bool):
    """Axial Gaussian along depth; lateral Gaussian along the arc, its width in mm growing with depth.

    Speckle (random scatterers) is normalised to keep its mean power; coherent echoes pass with unit gain.
    """
    if sigma_axial > 0.3:
        field = _blur(np.ascontiguousarray(field.real), 0, sigma_axial) \
            + 1j * _blur(np.ascontiguousarray(field.imag), 0, sigma_axial)
        if speckle:
            field *= np.sqrt(2 * np.sqrt(np.pi) * sigma_axial)
    lines = field.shape[0]
    lateral_mm = scanner.lateral_psf_sigma_mm * (0.8 + 0.2 * depth / 2.0)
    sigma_lines = lateral_mm / np.maximum(depth, scanner.catheter_radius_mm) * lines / (2 * np.pi)
    freq = np.fft.fftfreq(lines)[:, None]
    transfer = np.exp(-2 * (np.pi * freq * sigma_lines[None, :]) ** 2)
    if speckle:
        transfer = transfer * np.sqrt(np.maximum(2 * np.sqrt(np.pi) * sigma_lines, 1.0))[None, :]
    return np.fft.ifft(np.fft.fft(field, axis=0) * transfer.astype(np.float32), axis=0)
