"""The calcium rule (bright leading edge + shadow behind): hand-made frames, spacing independence, fitting, pieces.

Frames are drawn analytically in polar form around the image centre (the catheter) at any size and spacing, so one
anatomy can be rendered at two spacings: catheter (r < 0.5 mm, black), lumen (to 1.5 mm, dark), tissue, and three
sectors: calcium (a bright 0.25 mm layer at 2.0 mm with an acoustic shadow behind), a fibrous look-alike (the same
bright layer, tissue behind) and a shadow without a bright edge.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage

from ivus_tf import metrics as M
from ivus_tf.baselines import RuleParams, fit_rule, predict_calcium, score_rule
from ivus_tf.baselines.rule import drop_pieces, polar_grid, runs_to_mask
from ivus_tf.core.errors import InputError

LUMEN, TISSUE, BRIGHT, SHADOW = 25.0, 90.0, 230.0, 12.0
CALCIUM, FIBROUS, SHADOW_ONLY = (20, 100), (200, 280), (130, 170)  # sectors in degrees
EDGE_MM, LAYER_MM = 2.0, 0.25
RAW = RuleParams(intensity="raw", smoothing_sigma_mm=0.04, bright_threshold=150.0, shadow_threshold=40.0,
                 shadow_near_mm=0.3, shadow_far_mm=1.6, min_radius_mm=0.7)


def in_sector(theta_deg, sector):
    return (theta_deg >= sector[0]) & (theta_deg < sector[1])


def draw(size: int, spacing_mm: float, sectors=(CALCIUM, FIBROUS, SHADOW_ONLY), rotate_deg: float = 0.0,
         noise: float = 4.0, seed: int = 0, guidewire: bool = False):
    """(image uint8, calcium truth bool, {name: sector mask}) of one hand-made frame (module docstring)."""
    centre = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    y, x = (yy - centre) * spacing_mm, (xx - centre) * spacing_mm
    r = np.hypot(y, x)
    theta = (np.degrees(np.arctan2(y, x)) - rotate_deg) % 360
    calcium_sector, fibrous_sector, shadow_sector = (in_sector(theta, s) if s in sectors else np.zeros_like(r, bool)
                                                     for s in (CALCIUM, FIBROUS, SHADOW_ONLY))
    image = np.where(r < 1.5, LUMEN, TISSUE)
    layer = (r >= EDGE_MM) & (r < EDGE_MM + LAYER_MM)
    behind = r >= EDGE_MM + LAYER_MM
    image = np.where((calcium_sector | fibrous_sector) & layer, BRIGHT, image)
    image = np.where(calcium_sector & behind, SHADOW, image)
    image = np.where(shadow_sector & (r >= EDGE_MM), SHADOW, image)
    if guidewire:  # a bright spot in the lumen with a narrow shadow behind it, at 300 degrees
        spot = np.hypot(y - 1.0 * np.sin(np.radians(300)), x - 1.0 * np.cos(np.radians(300))) < 0.12
        image = np.where((np.abs(((theta - 300 + 180) % 360) - 180) < 4) & (r > 1.1), SHADOW, image)
        image = np.where(spot, BRIGHT, image)
    image = image + np.random.default_rng(seed).normal(0, noise, image.shape)
    image = np.where((r < 0.5) | (r > size * spacing_mm / 2), 0, image)
    truth = calcium_sector & layer
    return (np.clip(image, 0, 255).astype(np.uint8), truth,
            {"fibrous": fibrous_sector & (r > 1.5), "shadow_only": shadow_sector & (r > 1.5)})


@pytest.mark.parametrize("intensity", ["raw", "normalised"])
def test_the_rule_finds_the_calcium_layer_and_not_its_look_alikes(intensity):
    image, truth, look_alikes = draw(256, 0.04)
    params = RAW if intensity == "raw" else dataclasses.replace(
        RAW, intensity="normalised", bright_threshold=150.0 / TISSUE, shadow_threshold=40.0 / TISSUE)
    mask = predict_calcium(image, 0.04, params)
    assert mask.shape == truth.shape and mask.dtype == bool
    assert M.dice(mask, truth) > 0.85
    assert not (mask & look_alikes["fibrous"]).any()  # bright, but sound passes through
    assert not (mask & look_alikes["shadow_only"]).any()  # a shadow without a bright edge
    # each A-line keeps its leading run only: nothing deeper than the layer (and its smoothing) in the calcium sector
    r = np.hypot(*(np.mgrid[:256, :256] - 127.5)) * 0.04
    assert not (mask & (r > EDGE_MM + LAYER_MM + 0.1)).any()


def test_no_shadow_no_calcium_and_the_thresholds_matter():
    image, truth, _ = draw(128, 0.08, sectors=(FIBROUS, SHADOW_ONLY))
    assert not predict_calcium(image, 0.08, RAW).any()
    image, truth, _ = draw(128, 0.08)
    assert predict_calcium(image, 0.08, RAW).any()
    assert not predict_calcium(image, 0.08, dataclasses.replace(RAW, bright_threshold=240.0)).any()
    assert not predict_calcium(image, 0.08, dataclasses.replace(RAW, shadow_threshold=5.0)).any()


def test_the_same_anatomy_at_two_spacings_gives_the_same_mask():
    coarse_image, coarse_truth, _ = draw(256, 0.04)
    fine_image, fine_truth, _ = draw(512, 0.02)
    coarse = predict_calcium(coarse_image, 0.04, RAW)
    fine = predict_calcium(fine_image, 0.02, RAW)
    assert M.dice(fine, fine_truth) > 0.85 and M.dice(coarse, coarse_truth) > 0.85
    downsampled = fine.reshape(256, 2, 256, 2).mean(axis=(1, 3)) >= 0.5
    assert M.dice(downsampled, coarse) > 0.9
    assert abs(fine.sum() * 0.02**2 - coarse.sum() * 0.04**2) < 0.1 * coarse.sum() * 0.04**2  # area in mm^2


def test_anisotropic_spacing_and_a_non_square_frame():
    image, truth, _ = draw(256, 0.04)
    squeezed = image[:, ::2]  # columns twice as far apart
    mask = predict_calcium(squeezed, (0.04, 0.08), RAW)
    assert mask.shape == (256, 128)
    assert M.dice(mask, truth[:, ::2]) > 0.75


def test_the_arc_filter_drops_a_guidewire_spot_and_keeps_the_calcium_arc():
    image, truth, _ = draw(256, 0.04, sectors=(CALCIUM,), guidewire=True)
    loose = predict_calcium(image, 0.04, RAW)
    strict = predict_calcium(image, 0.04, dataclasses.replace(RAW, min_arc_deg=20.0))
    assert (loose & ~truth).sum() > 5  # the guidewire's echo has a shadow behind it too
    assert M.dice(strict, truth) > 0.85 and (strict & ~truth).sum() < 0.1 * truth.sum()
    assert not predict_calcium(image, 0.04, dataclasses.replace(RAW, min_arc_deg=100.0)).any()  # the arc is 80 deg
    assert not predict_calcium(image, 0.04, dataclasses.replace(RAW, min_area_mm2=1.0)).any()  # ~0.8 mm^2


def test_drop_pieces_matches_8_connected_labelling_with_wrap_around():
    grid = polar_grid((64, 64), (0.05, 0.05))
    rng = np.random.default_rng(3)
    for trial in range(20):
        present = rng.random(grid.angles) < 0.7
        first = rng.integers(0, grid.samples - 6, grid.angles)
        end = np.where(present, first + rng.integers(1, 6, grid.angles), first)
        for min_arc in (0.0, 15.0):
            for min_area in (0.0, 0.01):
                kept = runs_to_mask(*drop_pieces(first, end, grid, min_area, min_arc), grid.samples)
                mask = runs_to_mask(first, end, grid.samples)
                # reference: scipy labelling of three copies stacked along the angle, read in the middle one
                tiled = np.concatenate([mask, mask, mask])
                labels = ndimage.label(tiled, structure=np.ones((3, 3), bool))[0]
                middle = labels[grid.angles:2 * grid.angles]
                expected = np.zeros_like(mask)
                for label in np.unique(middle[middle > 0]):
                    piece = labels == label
                    lines = np.unique(np.nonzero(piece)[0] % grid.angles)
                    cells = np.unique(np.flatnonzero(piece) % (grid.angles * grid.samples))
                    area = grid.pixel_counts[cells].sum() * 0.05 ** 2
                    if lines.size * 360 / grid.angles >= min_arc - 1e-9 and area >= min_area:
                        expected |= middle == label
                np.testing.assert_array_equal(kept, expected, err_msg=f"trial {trial} arc {min_arc} area {min_area}")


def test_score_rule_equals_the_metric_on_the_cartesian_masks():
    frames, masks = [], []
    for i, sectors in enumerate([(CALCIUM, FIBROUS), (FIBROUS,), (CALCIUM, SHADOW_ONLY)]):
        image, truth, _ = draw(96, 0.1, sectors=sectors, rotate_deg=40 * i, seed=i)
        frames.append(image)
        masks.append(truth)
    frames.append(draw(80, 0.125, seed=9)[0])  # another size and spacing: a second group
    masks.append(np.zeros((80, 80), bool))
    spacings = [0.1, 0.1, 0.1, 0.125]
    for params in (RAW, dataclasses.replace(RAW, min_arc_deg=30.0, max_thickness_mm=0.2), dataclasses.replace(
            RAW, bright_threshold=250.0)):
        expected = [M.dice(predict_calcium(f, s, params), m) for f, m, s in zip(frames, masks, spacings)]
        np.testing.assert_allclose(score_rule(frames, masks, spacings, params), expected, rtol=0, atol=1e-12)
    assert score_rule(frames, masks, spacings, dataclasses.replace(RAW, bright_threshold=250.0))[1] == 1.0


def test_fitting_recovers_sensible_thresholds_on_synthetic_frames():
    frames, masks = [], []
    for i in range(8):  # calcium at several angles, and calcium-free frames with look-alikes
        sectors = (CALCIUM, FIBROUS, SHADOW_ONLY) if i % 2 == 0 else (FIBROUS, SHADOW_ONLY)
        image, truth, _ = draw(96, 0.1, sectors=sectors, rotate_deg=45 * i, seed=i, noise=8.0)
        frames.append(image)
        masks.append(truth)
    spacings = [0.1] * len(frames)
    start = RuleParams(intensity="raw", bright_threshold=60.0, shadow_threshold=100.0)
    assert score_rule(frames, masks, spacings, start).mean() < 0.6
    params = fit_rule(frames, masks, spacings, intensities=("raw",))
    assert TISSUE < params.bright_threshold < BRIGHT
    assert SHADOW < params.shadow_threshold < TISSUE
    assert score_rule(frames, masks, spacings, params).mean() > 0.85
    normalised = fit_rule(frames, masks, spacings)
    assert normalised.intensity == "normalised"
    assert score_rule(frames, masks, spacings, normalised).mean() > 0.85


def test_params_round_trip_through_json_and_bad_values_are_refused():
    params = RuleParams(intensity="raw", bright_threshold=130.0, min_arc_deg=15.0)
    assert RuleParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(InputError, match="unknown key 'bright'"):
        RuleParams.from_dict({"bright": 1.0})
    with pytest.raises(InputError, match="shadow_far_mm"):
        RuleParams(shadow_near_mm=1.0, shadow_far_mm=0.5).validate()
    with pytest.raises(InputError, match="intensity"):
        RuleParams(intensity="log").validate()
    with pytest.raises(InputError, match="too small"):
        predict_calcium(np.zeros((4, 4), np.uint8), 0.1)
    with pytest.raises(InputError, match="unknown rule parameter"):
        fit_rule([np.zeros((32, 32), np.uint8)], [np.zeros((32, 32), bool)], [0.1], search={"thresh": (1,)})
    with pytest.raises(InputError, match="as many frames"):
        fit_rule([np.zeros((32, 32), np.uint8)], [], [0.1])


def test_the_rule_imports_without_tensorflow():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, ivus_tf.baselines\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))[:3])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]"
