"""Contour functions of the phantom's anatomy: periodic functions of the angle around the vessel centre, sampled
on `N_PHI` angles, and smooth random functions of the pullback position z (mm)."""

from __future__ import annotations

import numpy as np

N_PHI = 720
PHI = 2 * np.pi * np.arange(N_PHI) / N_PHI
TWO_PI = 2 * np.pi


class AngleSampler:
    """Periodic linear interpolation of contour functions (sampled on `PHI`) at fixed angles `phi` (radians).

    The indices and weights are computed once per set of points and reused for every contour function.
    """

    def __init__(self, phi: np.ndarray):
        u = np.mod(phi, TWO_PI) * (N_PHI / TWO_PI)
        i0 = np.floor(u).astype(np.int32)
        self.w = (u - i0).astype(np.float32)
        self.i0 = i0 % N_PHI
        self.i1 = (self.i0 + 1) % N_PHI

    def __call__(self, values: np.ndarray) -> np.ndarray:
        v0 = values[self.i0]
        return v0 + (values[self.i1] - v0) * self.w


def lookup(values: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Periodic linear interpolation of a contour function sampled on `PHI` at angles `phi` (radians)."""
    return AngleSampler(np.asarray(phi))(values)


def wrap_angle(angle):
    return np.mod(np.asarray(angle) + np.pi, TWO_PI) - np.pi


class Smooth:
    """A smooth random function of z (mm) with values mostly in [-1, 1]: a few sinusoids of random wavelength."""

    def __init__(self, rng: np.random.Generator, wavelength_mm=(4.0, 20.0), terms: int = 3):
        self.k = TWO_PI / rng.uniform(*wavelength_mm, terms)
        self.phase = rng.uniform(0, TWO_PI, terms)
        amp = rng.uniform(0.5, 1.0, terms)
        self.amp = amp / amp.sum()

    def __call__(self, z: float) -> float:
        return float(np.sum(self.amp * np.sin(self.k * z + self.phase)))


def _harmonics(rng: np.random.Generator, orders=(2, 3, 4, 5, 6), scale=0.05):
    """Random smooth shape perturbation: per order an amplitude (decaying with order) and two smooth phases."""
    return [(k, scale * rng.uniform(0.3, 1.0) / (k - 1), Smooth(rng, (8, 30)), rng.uniform(0, TWO_PI)) for k in orders]


def _shape(harmonics, z: float) -> np.ndarray:
    out = np.zeros(N_PHI)
    for k, amp, drift, phase in harmonics:
        out += amp * np.cos(k * PHI + phase + 1.5 * drift(z))
    return out


def _smooth_periodic(values: np.ndarray, sigma_samples: float) -> np.ndarray:
    freq = np.fft.rfftfreq(N_PHI)
    return np.fft.irfft(np.fft.rfft(values) * np.exp(-2 * (np.pi * sigma_samples * freq) ** 2), N_PHI)
