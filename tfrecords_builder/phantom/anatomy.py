"""Phantom anatomy: a pullback of smoothly varying vessel cross-sections, and what tissue lies where.

A case is one pullback. Its parameters are smooth random functions of the pullback position z (mm), so
neighbouring frames look alike and anatomy changes gradually; cases differ in everything. Each frame's anatomy is
a set of contour functions of the angle phi around the vessel centre (sampled on `N_PHI` angles):

    lumen border  r_lumen(phi) = r_eem(phi) - media(phi) - plaque(phi)     (eccentric plaque, irregular lumen)
    media         [r_eem - media, r_eem)                                   (thin dark band; EEM = its outer border)
    adventitia    [r_eem, r_eem + adventitia)                              (bright)
    deposits      [r_lumen + offset, r_lumen + offset + thickness)         (calcium, dense fibrous, lipid,
                                                                            attenuating plaque: inside the plaque)

Calcium is a plate whose leading `layer` (towards the lumen) is the bright echo annotators outline; the rest of
the plate lies in its acoustic shadow (class `CALCIUM_HIDDEN`, never labelled). Spotty calcium is thin small
spots with partial shadows. Objects placed in the plane: side branches (a second lumen opening the wall over an
arc; the vessel contour is interpolated across it, as annotators do), stent struts at the lumen border, the
guidewire in the lumen, bright perivascular tissue, veins and the pericardium outside the EEM. `classify` says
which tissue lies at given points (mm, catheter at the origin); `labels.masks` draws the ground truth from the
same functions, so image and labels cannot disagree beyond the annotators' own wobble.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfrecords_builder.phantom.config import PhantomConfig, bounds
from tfrecords_builder.phantom.contours import (
    N_PHI,
    PHI,
    TWO_PI,
    AngleSampler,
    Smooth,
    _harmonics,
    _shape,
    _smooth_periodic,
    lookup,
    wrap_angle,
)
from tfrecords_builder.phantom.scanner import uniform as _uniform

# Tissue classes (index into the acoustic property table of `acoustics.py`).
CATHETER, BLOOD, PLAQUE, FIBROUS, LIPID, ATTENUATING, CALCIUM, MEDIA, ADVENTITIA, PERIVASCULAR, \
    BRIGHT_PERIVASCULAR, VEIN, PERICARDIUM, GUIDEWIRE, CALCIUM_HIDDEN, STRUT = range(16)
CLASS_NAMES = ("catheter", "blood", "plaque", "fibrous", "lipid", "attenuating", "calcium", "media", "adventitia",
               "perivascular", "bright_perivascular", "vein", "pericardium", "guidewire", "calcium_hidden", "strut")
DEPOSIT_CLASSES = (FIBROUS, LIPID, ATTENUATING, CALCIUM)  # later ones win where they overlap
GUIDEWIRE_RADIUS_MM = 0.18  # 0.014-inch wire
STRUT_HALF_MM = (0.04, 0.08)  # radial, tangential half-size of a stent strut (with its blooming)


@dataclass
class Deposit:
    """Something inside the plaque over an arc, along a stretch of the pullback."""

    kind: int
    z_start: float
    z_end: float
    center: Smooth
    center0: float
    arc_max_deg: float
    thickness_mm: float
    depth: float  # 0 = at the lumen border (superficial), 1 = against the media (deep)
    level_db: float = 0.0
    reverberation: bool = False
    ring: bool = False
    layer_mm: float = 0.0  # calcium: the bright leading layer (0: the whole thickness)
    shadow_db: float = 0.0  # calcium: one-way loss behind the leading layer
    min_arc_deg: float = 10.0

    def arc_deg(self, z: float) -> float:
        if self.ring:
            return 360.0
        u = (z - self.z_start) / (self.z_end - self.z_start)
        return max(self.min_arc_deg, self.arc_max_deg * np.sin(np.pi * np.clip(u, 0, 1)) ** 0.6)


@dataclass
class Blob:
    """An ellipse outside (or opening) the vessel wall, fixed to the vessel, along a stretch of the pullback."""

    kind: int
    z_start: float
    z_end: float
    angle: float
    distance_mm: float  # from the EEM (positive: outside)
    radius_mm: tuple
    level_db: float = 0.0


@dataclass
class Case:
    """A pullback: per-case constants and smooth functions of z."""

    config: PhantomConfig
    length_mm: float
    eem_radius_mm: float
    eem_shape: list
    plaque_burden: float
    eccentricity: float
    eccentric_angle: Smooth
    media_mm: float
    adventitia_mm: float
    catheter_fraction: Smooth
    catheter_direction: Smooth
    slow: list
    catheter_radius_mm: float = 0.48
    deposits: list = field(default_factory=list)
    blobs: list = field(default_factory=list)
    guidewire: tuple | None = None
    stent: tuple | None = None  # (z_start, z_end, strut angles at z = 0)
    twist: Smooth | None = None
    acoustics: dict = field(default_factory=dict)


def sample_case(config: PhantomConfig, rng: np.random.Generator, frames: int,
                catheter_radius_mm: float | None = None) -> Case:
    """Draw one pullback's anatomy and tissue echo properties (the scanner is drawn apart, `scanner.py`)."""
    spacing = _uniform(rng, config.frame_spacing_mm)
    length = max(spacing * max(frames - 1, 1), 1.0)
    case = Case(
        config=config,
        length_mm=length,
        eem_radius_mm=_uniform(rng, config.eem_radius_mm),
        eem_shape=_harmonics(rng, scale=0.06),
        plaque_burden=_uniform(rng, config.plaque_burden),
        eccentricity=_uniform(rng, config.plaque_eccentricity),
        eccentric_angle=Smooth(rng, (10, 40)),
        media_mm=_uniform(rng, config.media_thickness_mm),
        adventitia_mm=_uniform(rng, config.adventitia_thickness_mm),
        catheter_fraction=Smooth(rng, (5, 20)),
        catheter_direction=Smooth(rng, (8, 30)),
        slow=[Smooth(rng, (6, 25)) for _ in range(4)],
        twist=Smooth(rng, (10, 40)),
        catheter_radius_mm=float(np.mean(bounds(config.catheter_radius_mm)) if catheter_radius_mm is None
                                 else catheter_radius_mm),
    )
    case.acoustics = {name: _uniform(rng, getattr(config, name)) for name in (
        "blood_db", "media_db", "adventitia_db", "perivascular_db", "tissue_attenuation_db_per_mm", "fibrous_db")}
    _add_deposits(case, rng)
    _add_blobs(case, rng)
    if rng.random() < config.guidewire_probability:
        case.guidewire = (rng.uniform(0, TWO_PI), Smooth(rng, (5, 20)), rng.uniform(0.05, 0.8))
    if rng.random() < config.stent_probability:
        z0 = rng.uniform(-0.5, 0.6) * case.length_mm
        struts = int(rng.integers(8, 16))
        angles = TWO_PI * (np.arange(struts) + rng.uniform(-0.25, 0.25, struts)) / struts + rng.uniform(0, TWO_PI)
        case.stent = (z0, z0 + rng.uniform(8.0, 24.0), angles)
    return case


def _stretches(rng, rate_per_mm, length_mm, extent_mm):
    """Random stretches [z0, z1) along the pullback, about `rate_per_mm * length` of them (Poisson)."""
    out = []
    for _ in range(rng.poisson(rate_per_mm * (length_mm + extent_mm[1]))):
        extent = rng.uniform(*extent_mm)
        start = rng.uniform(-extent, length_mm)
        out.append((start, start + extent))
    return out


def _add_deposits(case: Case, rng: np.random.Generator) -> None:
    cfg = case.config
    arc_lo, arc_hi = bounds(cfg.calcium_arc_deg)
    for z0, z1 in _stretches(rng, cfg.calcium_segments_per_10mm / 10, case.length_mm,
                             bounds(cfg.calcium_segment_length_mm)):
        case.deposits.append(Deposit(
            CALCIUM, z0, z1, Smooth(rng, (8, 30)), rng.uniform(0, TWO_PI),
            arc_lo + (arc_hi - arc_lo) * rng.beta(1.3, 2.0), _uniform(rng, cfg.calcium_thickness_mm),
            depth=float(rng.uniform(0.0, 0.25) if rng.random() < 0.6 else rng.uniform(0.6, 1.0)),
            level_db=_uniform(rng, cfg.calcium_db), reverberation=rng.random() < cfg.reverberation_probability,
            ring=rng.random() < 0.08, layer_mm=_uniform(rng, cfg.calcium_layer_mm),
            shadow_db=_uniform(rng, cfg.calcium_shadow_db), min_arc_deg=arc_lo))
    for z0, z1 in _stretches(rng, cfg.spotty_calcium_per_10mm / 10, case.length_mm, (1.0, 4.0)):
        for _ in range(int(rng.integers(1, 5))):  # a cluster of spots, each thin with a partial shadow
            thin = rng.uniform(0.05, 0.12)
            case.deposits.append(Deposit(
                CALCIUM, z0 + rng.uniform(0, 0.5), z1 - rng.uniform(0, 0.5), Smooth(rng, (8, 30)),
                rng.uniform(0, TWO_PI), rng.uniform(8, 30), thin, depth=float(rng.uniform(0, 1)),
                level_db=_uniform(rng, cfg.calcium_db) - rng.uniform(0, 3), layer_mm=thin,
                shadow_db=rng.uniform(2.0, 6.0), min_arc_deg=4.0))
    fib_extent = (2.0, 6.0)
    for z0, z1 in _stretches(rng, cfg.fibrous_per_frame / np.mean(fib_extent), case.length_mm, fib_extent):
        case.deposits.insert(0, Deposit(
            FIBROUS, z0, z1, Smooth(rng, (8, 30)), rng.uniform(0, TWO_PI), rng.uniform(30, 160),
            rng.uniform(0.2, 0.6), depth=float(rng.uniform(0, 1)), level_db=case.acoustics["fibrous_db"]))
    for z0, z1 in _stretches(rng, 0.4 / 4.0, case.length_mm, (2.0, 6.0)):
        case.deposits.insert(0, Deposit(
            LIPID, z0, z1, Smooth(rng, (8, 30)), rng.uniform(0, TWO_PI), rng.uniform(40, 140), rng.uniform(0.3, 0.8),
            depth=float(rng.uniform(0.3, 1.0))))
    if rng.random() < cfg.attenuated_plaque_probability:
        z0 = rng.uniform(0, case.length_mm)
        case.deposits.insert(0, Deposit(
            ATTENUATING, z0, z0 + rng.uniform(2, 6), Smooth(rng, (8, 30)), rng.uniform(0, TWO_PI),
            rng.uniform(60, 180), rng.uniform(0.4, 0.9), depth=float(rng.uniform(0.0, 0.4))))


def _add_blobs(case: Case, rng: np.random.Generator) -> None:
    cfg = case.config
    extent = (2.0, 8.0)
    for z0, z1 in _stretches(rng, cfg.bright_perivascular_per_frame / np.mean(extent), case.length_mm, extent):
        case.blobs.append(Blob(BRIGHT_PERIVASCULAR, z0, z1, rng.uniform(0, TWO_PI), rng.uniform(0.15, 1.6),
                               (rng.uniform(0.25, 0.9), rng.uniform(0.08, 0.25)), rng.uniform(6.0, 12.0)))
    for z0, z1 in _stretches(rng, 0.5 / np.mean(extent), case.length_mm, extent):
        case.blobs.append(Blob(VEIN, z0, z1, rng.uniform(0, TWO_PI), rng.uniform(0.5, 1.4),
                               (rng.uniform(0.35, 0.8), rng.uniform(0.25, 0.5))))
    if rng.random() < 0.5:
        case.blobs.append(Blob(PERICARDIUM, -1.0, case.length_mm + 1, rng.uniform(0, TWO_PI), rng.uniform(0.9, 2.2),
                               (rng.uniform(2.0, 4.0), rng.uniform(0.12, 0.3)), rng.uniform(6.0, 11.0)))
    for z0, z1 in _stretches(rng, cfg.side_branches_per_10mm / 10, case.length_mm, (1.0, 3.0)):
        case.blobs.append(Blob(BLOOD, z0, z1, rng.uniform(0, TWO_PI), rng.uniform(-0.1, 0.15),
                               (rng.uniform(0.7, 1.4),) * 2))


@dataclass
class FrameAnatomy:
    """One frame's anatomy in the anatomy frame; `rotation` and `scale` add the cardiac motion."""

    r_lumen: np.ndarray
    r_eem: np.ndarray
    media: np.ndarray
    adventitia: np.ndarray
    deposits: dict  # class -> {"offset", "thickness", "layer", "level", "shadow"}: arrays over phi (mm, dB)
    center_mm: tuple  # vessel centre, catheter at the origin
    rotation: float
    scale: float
    catheter_radius_mm: float
    blobs: list
    guidewire_mm: tuple | None
    reverberating: np.ndarray  # per phi: calcium here reverberates
    z_mm: float
    struts: np.ndarray | None = None  # (n, 2): strut centres as (rho mm, phi) in vessel coordinates


def frame_anatomy(case: Case, z: float, rng: np.random.Generator) -> FrameAnatomy:
    """Evaluate the case at pullback position z (mm); `rng` draws the cardiac phase of this frame."""
    cfg = case.config
    s0, s1, s2, s3 = (f(z) for f in case.slow)
    r_eem = case.eem_radius_mm * (1 + 0.08 * s0) * (1 + _shape(case.eem_shape, z))
    burden = float(np.clip(case.plaque_burden + 0.1 * s1, 0.2, 0.85))
    media = np.full(N_PHI, case.media_mm * (1 + 0.2 * s2))
    inner = r_eem - media
    mean_plaque = float(np.mean(inner)) * (1 - np.sqrt(1 - burden))
    ecc_angle = TWO_PI * case.eccentric_angle(z) + s3
    plaque = mean_plaque * (1 + case.eccentricity * np.cos(PHI - ecc_angle)) * (1 + _shape(case.eem_shape[2:], z + 7))
    plaque = np.maximum(plaque, 0.04)
    media = media * np.clip(1.2 - 0.5 * plaque / (mean_plaque + 1e-6), 0.5, 1.2)  # media thins behind thick plaque

    deposits, reverb = _deposit_arrays(case, z)
    if CALCIUM in deposits:  # calcium thickens the plaque where it sits (it may bulge into the lumen)
        calc = deposits[CALCIUM]
        bulk = np.where(calc["thickness"] > 0, calc["layer"] + 0.5 * calc["thickness"] + 0.1, 0)
        plaque = np.maximum(plaque, _smooth_periodic(bulk, 15))
    inner = r_eem - media
    r_lumen = np.maximum(inner - plaque, 0.8)
    available = inner - r_lumen
    for arrays in deposits.values():  # placed by the deposit's full thickness, so tapered ends keep their depth
        thickness = np.minimum(arrays["thickness"], np.maximum(available - 0.06, 0))
        nominal = np.minimum(arrays["nominal"], np.maximum(available - 0.06, 0))
        offset = np.clip(arrays["depth"] * (available - nominal - 0.05), 0.02, None)
        thickness = np.minimum(thickness, np.maximum(available - offset - 0.04, 0))
        arrays.update(offset=offset, thickness=thickness, layer=np.minimum(arrays["layer"], thickness))

    adventitia = np.full(N_PHI, case.adventitia_mm) * (1 + 0.5 * _shape(case.eem_shape[:2], z + 3))
    rotation = TWO_PI * 0.15 * case.twist(z) + np.deg2rad(cfg.cardiac_rotation_deg) * np.sin(rng.uniform(0, TWO_PI))
    scale = 1 + cfg.cardiac_scale * np.sin(rng.uniform(0, TWO_PI))
    center = _place_catheter(case, z, r_lumen)
    blobs = [b for b in case.blobs if b.z_start <= z < b.z_end]
    guidewire = None
    if case.guidewire is not None:
        angle0, drift, gap = case.guidewire
        angle = angle0 + 0.8 * drift(z)
        for gap_mm in (gap, gap / 2, 0.03):
            r = case.catheter_radius_mm + gap_mm + GUIDEWIRE_RADIUS_MM
            gx, gy = r * np.cos(angle), r * np.sin(angle)
            rho, phi = _to_vessel(gx, gy, center, 1.0)
            if rho + GUIDEWIRE_RADIUS_MM + 0.05 < lookup(r_lumen, phi) * (1 - cfg.cardiac_scale):
                guidewire = (gx, gy)
                break
    struts = None
    if case.stent is not None and case.stent[0] <= z < case.stent[1]:
        phi_s = case.stent[2] + 0.3 * case.twist(z)
        struts = np.stack([lookup(r_lumen, phi_s) + STRUT_HALF_MM[0] + 0.01, phi_s], axis=1)
    return FrameAnatomy(r_lumen, r_eem, media, adventitia, deposits, center, rotation, scale,
                        case.catheter_radius_mm, blobs, guidewire, reverb, z, struts)


def _deposit_arrays(case: Case, z: float):
    """Per class: arrays over phi (depth 0..1; thickness, the deposit's untapered thickness and its bright layer, mm;
    level and shadow, dB); and where calcium reverberates."""
    out = {}
    reverb = np.zeros(N_PHI, bool)
    for dep in case.deposits:
        if not dep.z_start <= z < dep.z_end:
            continue
        arrays = out.setdefault(dep.kind, {k: np.zeros(N_PHI) for k in ("depth", "thickness", "nominal", "layer",
                                                                        "level", "shadow")})
        half = np.deg2rad(dep.arc_deg(z)) / 2
        center = dep.center0 + 0.6 * dep.center(z)
        delta = np.abs(wrap_angle(PHI - center))
        if dep.ring or half >= np.pi - 1e-3:
            taper = np.ones(N_PHI)
        else:
            taper = np.sqrt(np.clip(1 - (delta / half) ** 4, 0, 1))
        wobble = 1 + 0.15 * np.cos(3 * PHI + dep.center0) * np.cos(5 * PHI + 2 * dep.center0)
        local = dep.thickness_mm * taper * wobble
        if dep.kind == CALCIUM:  # blunt ends: the bright layer keeps most of its thickness to the arc's end
            local = np.where(local > 0.02, np.maximum(local, 0.6 * min(dep.layer_mm, dep.thickness_mm)), 0)
        take = local > arrays["thickness"]
        arrays["thickness"][take] = local[take]
        arrays["depth"][take] = dep.depth
        arrays["nominal"][take] = dep.thickness_mm
        arrays["level"][take] = dep.level_db
        layer = np.minimum(dep.layer_mm or dep.thickness_mm, local)
        arrays["layer"][take] = layer[take]
        arrays["shadow"][take] = (dep.shadow_db * np.clip(local / 0.1, 0.3, 1.0))[take]
        if dep.kind == CALCIUM and dep.reverberation:
            reverb |= taper > 0
    return out, reverb


def _to_vessel(x, y, center, scale):
    dx, dy = (np.asarray(x) - center[0]) / scale, (np.asarray(y) - center[1]) / scale
    return np.hypot(dx, dy), np.arctan2(dy, dx)


def _place_catheter(case: Case, z: float, r_lumen: np.ndarray) -> tuple:
    """Vessel centre (catheter at the origin) such that the catheter lies inside the lumen, off-centre."""
    cfg = case.config
    x, y = r_lumen * np.cos(PHI), r_lumen * np.sin(PHI)
    area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
    cx = np.sum((x + np.roll(x, -1)) * (x * np.roll(y, -1) - np.roll(x, -1) * y)) / (6 * area)
    cy = np.sum((y + np.roll(y, -1)) * (x * np.roll(y, -1) - np.roll(x, -1) * y)) / (6 * area)
    direction = np.pi * 2 * case.catheter_direction(z)
    fraction = 0.35 + 0.35 * case.catheter_fraction(z)
    ring = np.linspace(0, TWO_PI, 48, endpoint=False)
    margin = case.catheter_radius_mm + 0.06
    for shrink in (1.0, 0.7, 0.45, 0.2, 0.0):
        reach = fraction * shrink * max(float(np.min(r_lumen)) - margin, 0)
        px, py = cx + reach * np.cos(direction), cy + reach * np.sin(direction)
        rho, phi = _to_vessel(px + margin * np.cos(ring), py + margin * np.sin(ring), (0, 0), 1.0)
        if np.all(rho < lookup(r_lumen, phi) * (1 - cfg.cardiac_scale)):
            break
    return (-px, -py)


def _anatomy_coords(anat: FrameAnatomy, x: np.ndarray, y: np.ndarray):
    """Rotate points (catheter frame, mm) into the anatomy frame."""
    c, s = np.cos(anat.rotation), np.sin(anat.rotation)
    return c * x + s * y, -s * x + c * y


def vessel_fields(anat: FrameAnatomy, x: np.ndarray, y: np.ndarray):
    """At points (catheter frame, mm): anatomy-frame x, y, vessel-centred rho, phi and an `AngleSampler` there."""
    ax, ay = _anatomy_coords(anat, x, y)
    rho, phi = _to_vessel(ax, ay, anat.center_mm, anat.scale)
    return ax, ay, rho, phi, AngleSampler(phi)


def classify(anat: FrameAnatomy, x: np.ndarray, y: np.ndarray):
    """Tissue class at points (mm, catheter at the origin), the echo level offset (dB) of deposits/blobs, and the
    extra one-way loss (dB) where the beam leaves a calcium layer (its shadow; partial for thin spots)."""
    ax, ay, rho, phi, at = vessel_fields(anat, x, y)
    r_lumen, r_eem = at(anat.r_lumen), at(anat.r_eem)
    cls = np.full(rho.shape, PERIVASCULAR, np.int8)
    level = np.zeros(rho.shape, np.float32)
    shadow = np.zeros(rho.shape, np.float32)
    for blob in anat.blobs:
        if blob.kind == BLOOD:
            continue
        inside = _in_blob(anat, blob, rho, phi)
        cls[inside] = blob.kind
        level[inside] = blob.level_db
    cls[rho < r_eem + at(anat.adventitia)] = ADVENTITIA
    cls[rho < r_eem] = MEDIA
    cls[rho < r_eem - at(anat.media)] = PLAQUE
    for kind in DEPOSIT_CLASSES:
        if kind not in anat.deposits:
            continue
        arrays = anat.deposits[kind]
        start = r_lumen + at(arrays["offset"])
        thickness = at(arrays["thickness"])
        inside = (thickness > 0.02) & (rho >= start) & (rho < start + thickness)
        if kind == CALCIUM:
            layer = inside & (rho < start + at(arrays["layer"]))
            cls[inside & ~layer] = CALCIUM_HIDDEN
            inside = layer
            shadow[inside] = at(arrays["shadow"])[inside]
        cls[inside] = kind
        level[inside] = at(arrays["level"])[inside]
    for blob in anat.blobs:
        if blob.kind == BLOOD:  # side branch: opens everything but calcium
            inside = _in_blob(anat, blob, rho, phi) & (cls != CALCIUM) & (cls != CALCIUM_HIDDEN)
            cls[inside] = BLOOD
    cls[rho < r_lumen] = BLOOD
    if anat.struts is not None:
        near = np.flatnonzero(np.abs(rho - r_lumen).ravel() < 0.2)
        rho_near, phi_near, flat = rho.ravel()[near], phi.ravel()[near], cls.reshape(-1)
        for rho_s, phi_s in anat.struts:
            hit = ((rho_near - rho_s) / STRUT_HALF_MM[0]) ** 2 \
                + (wrap_angle(phi_near - phi_s) * rho_s / STRUT_HALF_MM[1]) ** 2 < 1
            flat[near[hit]] = STRUT
    if anat.guidewire_mm is not None:
        cls[np.hypot(ax - anat.guidewire_mm[0], ay - anat.guidewire_mm[1]) < GUIDEWIRE_RADIUS_MM] = GUIDEWIRE
    cls[np.hypot(x, y) < anat.catheter_radius_mm] = CATHETER
    return cls, level, shadow


def _in_blob(anat: FrameAnatomy, blob: Blob, rho, phi):
    """Ellipse `distance_mm` outside the EEM (a side branch: the lumen border) at `angle`, long axis tangential."""
    border = anat.r_lumen if blob.kind == BLOOD else anat.r_eem  # a side branch starts at the lumen border
    base = float(lookup(border, np.array([blob.angle]))[0]) + blob.distance_mm + blob.radius_mm[1]
    radial = rho - base
    tangential = base * wrap_angle(phi - blob.angle)
    return (radial / blob.radius_mm[1]) ** 2 + (tangential / blob.radius_mm[0]) ** 2 < 1
