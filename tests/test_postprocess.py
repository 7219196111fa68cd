"""Tests of `ivus_tf.postprocess` on hand-made label maps whose cleaned form is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.postprocess import (
    PRESETS,
    PostprocessConfig,
    clean_calcium,
    clean_wall_lumen,
    describe_postprocess,
    load_postprocess,
    postprocess_frame,
    remove_islands,
)

SHAPE = (101, 101)  # centre pixel (50, 50): the catheter
DEFAULT = PRESETS["default"]


def disc(radius, centre=(50, 50), shape=SHAPE):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(rows - centre[0], cols - centre[1]) < radius


def vessel_map(lumen_radius=12, vessel_radius=30, lumen_centre=(50, 50)):
    labels = np.zeros(SHAPE, np.uint8)
    labels[disc(vessel_radius)] = 2
    labels[disc(lumen_radius, lumen_centre)] = 1
    return labels


# ----------------------------------------------------------------------------------------------- wall-lumen

def test_clean_map_is_left_as_is():
    labels = vessel_map()
    np.testing.assert_array_equal(clean_wall_lumen(labels, 0.02, DEFAULT), labels)


def test_of_two_lumen_blobs_the_one_holding_the_catheter_is_kept():
    labels = vessel_map(lumen_radius=8)
    labels[disc(6, (50, 70))] = 1  # a second, side-branch-like lumen in the wall
    labels[disc(4, (90, 90))] = 1  # and one outside the vessel
    cleaned = clean_wall_lumen(labels, 0.02, DEFAULT)
    np.testing.assert_array_equal(cleaned == 1, disc(8))
    assert (cleaned[disc(6, (50, 70))] == 2).all()  # inside the vessel: becomes wall
    assert (cleaned[disc(4, (90, 90))] == 0).all()  # outside: background (and not a second vessel)


def test_lumen_nearest_the_centre_when_none_holds_it():
    labels = vessel_map(lumen_radius=1)
    labels[labels == 1] = 2
    near, far = disc(6, (50, 62)), disc(9, (50, 30))  # the farther blob is larger
    labels[near] = 1
    labels[far] = 1
    cleaned = clean_wall_lumen(labels, 0.02, DEFAULT)
    np.testing.assert_array_equal(cleaned == 1, near)


def test_holes_filled_in_lumen_and_vessel():
    labels = vessel_map()
    labels[disc(3)] = 2  # the catheter labelled as wall inside the lumen
    labels[disc(4, (50, 75))] = 0  # a hole in the wall
    cleaned = clean_wall_lumen(labels, 0.02, DEFAULT)
    np.testing.assert_array_equal(cleaned, vessel_map())
    no_fill = clean_wall_lumen(labels, 0.02, dataclasses.replace(DEFAULT, fill_holes=False))
    np.testing.assert_array_equal(no_fill, labels)


def test_vessel_kept_is_the_one_enclosing_the_lumen_not_the_largest():
    labels = np.zeros(SHAPE, np.uint8)
    labels[disc(15)] = 2
    labels[disc(8)] = 1
    big = disc(20, (78, 20)) & ~disc(18)  # a larger bright region elsewhere, labelled vessel wall
    labels[big] = 2
    assert big.sum() > disc(15).sum()
    cleaned = clean_wall_lumen(labels, 0.02, DEFAULT)
    np.testing.assert_array_equal(cleaned != 0, disc(15))
    # with no lumen at all, the largest vessel region is kept
    no_lumen = np.where(labels == 1, 2, labels).astype(np.uint8)
    np.testing.assert_array_equal(clean_wall_lumen(no_lumen, 0.02, DEFAULT) != 0, big)


def test_lumen_is_put_inside_the_vessel():
    labels = np.zeros(SHAPE, np.uint8)
    labels[disc(20)] = 2
    labels[disc(10, (50, 35))] = 1  # reaches column 25, outside the vessel disc (columns 31..69)
    cleaned = clean_wall_lumen(labels, 0.02, DEFAULT)
    np.testing.assert_array_equal(cleaned == 1, disc(10, (50, 35)))
    np.testing.assert_array_equal(cleaned != 0, disc(20) | disc(10, (50, 35)))


# -------------------------------------------------------------------------------------------------- calcium

def test_calcium_inside_the_lumen_removed():
    labels = vessel_map()
    calcium = disc(4, (50, 20)) | disc(3, (50, 44))  # one in the wall, one in the lumen (a guidewire echo)
    cleaned = clean_calcium(calcium, labels, 0.02, DEFAULT)
    np.testing.assert_array_equal(cleaned, disc(4, (50, 20)))
    # a region straddling the lumen border loses only its pixels inside the lumen
    straddle = disc(4, (50, 62))
    np.testing.assert_array_equal(clean_calcium(straddle, labels, 0.02, DEFAULT), straddle & (labels != 1))


def test_calcium_beyond_the_vessel_removed_with_a_tolerance():
    labels = vessel_map(vessel_radius=30)
    at_border = disc(3, (50, 80))   # straddles the EEM (column 80 = radius 30): kept whole
    near = disc(2, (50, 86))        # 4 px = 0.08 mm beyond the EEM at 0.02 mm/px: within 0.5 mm
    far = disc(3, (10, 95))         # about 0.5 mm beyond at 0.02 mm... measure below
    calcium = at_border | near | far
    beyond_px = np.hypot(10 - 50, 95 - 50) - 3 - 30  # nearest pixel of `far` to the EEM, in pixels
    spacing = 0.6 / beyond_px  # `far` lies 0.6 mm beyond the EEM: removed at the 0.5 mm tolerance
    cleaned = clean_calcium(calcium, labels, spacing, dataclasses.replace(DEFAULT, min_island_mm2=0))
    np.testing.assert_array_equal(cleaned, at_border | near)
    loose = dataclasses.replace(DEFAULT, min_island_mm2=0, calcium_vessel_tolerance_mm=1.0)
    np.testing.assert_array_equal(clean_calcium(calcium, labels, spacing, loose), calcium)
    off = dataclasses.replace(DEFAULT, min_island_mm2=0, calcium_inside_vessel=False)
    np.testing.assert_array_equal(clean_calcium(calcium, labels, spacing, off), calcium)
    # no vessel predicted: nothing to judge by, the calcium stays
    np.testing.assert_array_equal(clean_calcium(calcium, np.zeros(SHAPE, np.uint8), spacing,
                                                dataclasses.replace(DEFAULT, min_island_mm2=0)), calcium)


def island(area_px, corner=(30, 20)):
    """A solid rectangle of `area_px` pixels (2 rows) in the wall of `vessel_map`."""
    mask = np.zeros(SHAPE, bool)
    mask[corner[0]:corner[0] + 2, corner[1]:corner[1] + area_px // 2] = True
    return mask


def test_islands_below_the_minimum_area_removed_above_kept():
    config = dataclasses.replace(DEFAULT, min_island_mm2=0.01)  # 25 pixels at 0.02 mm
    small, large = island(24, (30, 36)), island(26, (66, 36))
    cleaned = clean_calcium(small | large, vessel_map(), 0.02, config)
    np.testing.assert_array_equal(cleaned, large)
    square = np.zeros(SHAPE, bool)
    square[10:15, 10:15] = True  # exactly the minimum: 25 pixels = 0.01 mm^2, kept
    np.testing.assert_array_equal(remove_islands(square, 0.02, 0.01), square)
    # pixels touching at a corner are one region (8-connectivity): two 12-pixel halves make one 24-pixel island,
    # removed at 25 pixels and kept at 22.5, where each half alone would go
    halves = island(12, (30, 36)) | island(12, (32, 42))
    assert halves.sum() == 24 and not remove_islands(halves, 0.02, 0.01).any()
    np.testing.assert_array_equal(remove_islands(halves, 0.02, 0.009), halves)
    assert not remove_islands(island(12, (30, 36)), 0.02, 0.009).any()


@pytest.mark.parametrize("spacing_mm, big_px, small_px", [(0.02, (4, 10), (4, 4)), (0.04, (2, 5), (2, 2))])
def test_the_same_physical_island_is_treated_the_same_at_two_spacings(spacing_mm, big_px, small_px):
    """A 0.08 x 0.2 mm island (0.016 mm^2) stays and a 0.08 x 0.08 mm one (0.0064 mm^2) goes at a 0.01 mm^2
    minimum, whether the frame has 0.02 mm pixels (40 and 16 pixels) or 0.04 mm pixels (10 and 4)."""
    big, small = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    big[5:5 + big_px[0], 5:5 + big_px[1]] = True
    small[30:30 + small_px[0], 30:30 + small_px[1]] = True
    np.testing.assert_array_equal(remove_islands(big | small, spacing_mm, 0.01), big)
    # anisotropic pixels of the same area give the same decision
    np.testing.assert_array_equal(remove_islands(big | small, (spacing_mm / 2, spacing_mm * 2), 0.01), big)
    # and so does the whole calcium cleaning, in the wall of a vessel
    labels = np.zeros(SHAPE, np.uint8)
    labels[:50] = 2
    np.testing.assert_array_equal(clean_calcium(big | small, labels, spacing_mm, DEFAULT), big)


# --------------------------------------------------------------------------------------------- frame, config

def test_postprocess_frame_calcium_only_model_and_off():
    calcium = island(10) | island(40, (60, 20))
    cleaned, labels = postprocess_frame(calcium, None, 0.02, DEFAULT)
    assert labels is None and cleaned.dtype == np.uint8
    np.testing.assert_array_equal(cleaned, island(40, (60, 20)))
    messy = vessel_map()
    messy[disc(3, (90, 90))] = 1
    assert postprocess_frame(calcium, messy, 0.02, None) == (calcium, messy)
    same = postprocess_frame(calcium, messy, 0.02, PRESETS["none"])
    assert same[0] is calcium and same[1] is messy
    full_calcium, full_labels = postprocess_frame(calcium | disc(3), messy, 0.02, DEFAULT)
    np.testing.assert_array_equal(full_labels, vessel_map())
    assert not full_calcium[disc(3)].any()


def test_presets_yaml_and_bad_values(tmp_path):
    assert not PRESETS["none"].enabled and PRESETS["default"].enabled
    assert describe_postprocess(DEFAULT)["preset"] == "default"
    assert describe_postprocess(None)["preset"] == "none"
    (tmp_path / "pp.yaml").write_text("min_island_mm2: 0.05\ncalcium_inside_vessel: false\n")
    config = load_postprocess(str(tmp_path / "pp.yaml"))
    assert config == dataclasses.replace(DEFAULT, min_island_mm2=0.05, calcium_inside_vessel=False)
    assert describe_postprocess(config)["preset"] == "custom"
    (tmp_path / "bad.yaml").write_text("min_island_mm2: -1\n")
    with pytest.raises(InputError, match="min_island_mm2 must be a finite number >= 0"):
        load_postprocess(str(tmp_path / "bad.yaml"))
    (tmp_path / "typo.yaml").write_text("min_islands_mm2: 1\n")
    with pytest.raises(InputError, match="did you mean 'min_island_mm2'"):
        load_postprocess(str(tmp_path / "typo.yaml"))
    with pytest.raises(InputError, match="not a preset"):
        load_postprocess("nnunet")
    assert PostprocessConfig() == DEFAULT
