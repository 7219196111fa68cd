"""Superficial calcium, lesions and the IVUS calcium score on synthetic pullbacks whose answer is known by
construction (discs and annular sectors of known radii)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ivus_tf.pullback.calcium_score import (
    ITEMS,
    equivalent_diameter_mm,
    lesion_calcium_score,
    superficial_calcium_arc_deg,
    superficial_calcium_mask,
)
from ivus_tf.pullback.lesions import calcified_segments, find_lesions
from predict_helpers import geometry_frame

SPACING = 0.02
ARC_SLACK = 2 * math.degrees(math.atan(0.71 / 50))  # pixel-footprint bound of the arc (tests/test_measurements)


def frame(calcium_r=(52, 60), arc=(0, 300), lumen_r=50, vessel_r=119, size=240):
    _, calcium, labels = geometry_frame(size=(size, size), center=(size / 2, size / 2), lumen_r=lumen_r,
                                        vessel_r=vessel_r, calcium=(*calcium_r, *arc))
    return calcium, labels == 1


@pytest.mark.parametrize("gap_px, superficial", [(2, True), (20, True), (30, False), (60, False)])
def test_superficial_means_leading_edge_within_half_a_millimetre_of_the_lumen(gap_px, superficial):
    """Lumen radius 1 mm; calcium 300 degrees starting gap_px * 0.02 mm outside it: 0.04 and 0.4 mm are
    superficial, 0.6 and 1.2 mm are deep (threshold 0.5 mm)."""
    calcium, lumen = frame(calcium_r=(50 + gap_px, 58 + gap_px))
    arc = superficial_calcium_arc_deg(calcium, lumen, (120, 120), SPACING, 0.5)
    if superficial:
        assert arc == pytest.approx(300, abs=ARC_SLACK)
    else:
        assert arc == 0.0
    assert superficial_calcium_arc_deg(calcium, lumen, (120, 120), SPACING, 1.5) == pytest.approx(300, abs=ARC_SLACK)


def test_superficial_arc_only_counts_the_superficial_part_and_needs_a_lumen():
    near, lumen = frame(calcium_r=(52, 60), arc=(0, 120))
    far, _ = frame(calcium_r=(90, 100), arc=(150, 330))
    both = near | far
    assert superficial_calcium_arc_deg(both, lumen, (120, 120), SPACING, 0.5) == pytest.approx(120, abs=ARC_SLACK)
    mask = superficial_calcium_mask(both, lumen, SPACING, 0.5)
    assert mask[near].all() and not mask[far].any()
    assert math.isnan(superficial_calcium_arc_deg(both, np.zeros_like(lumen), (120, 120), SPACING, 0.5))
    assert superficial_calcium_arc_deg(np.zeros_like(both), lumen, (120, 120), SPACING, 0.5) == 0.0


def test_equivalent_diameter():
    assert equivalent_diameter_mm(math.pi * 1.75 ** 2) == pytest.approx(3.5)
    assert math.isnan(equivalent_diameter_mm(math.nan)) and math.isnan(equivalent_diameter_mm(0.0))


# ------------------------------------------------------------------------------------------------- the score

def score(frames_over_270, slab_mm=0.25, ring=False, diameter=4.0, extra_frames=4):
    arcs = [120.0] * extra_frames + [300.0] * frames_over_270 + [120.0] * extra_frames
    if ring:
        arcs[1] = 360.0
    return lesion_calcium_score(arcs, [slab_mm] * len(arcs), diameter)


def test_300_degree_arc_over_6_mm_scores_and_over_4_mm_does_not():
    six, four = score(24), score(16)  # 24 and 16 frames of 0.25 mm
    assert six["items"][ITEMS[0]]["status"] == "met" and six["items"][ITEMS[0]]["value"] == pytest.approx(6.0)
    assert four["items"][ITEMS[0]]["status"] == "not met" and four["items"][ITEMS[0]]["value"] == pytest.approx(4.0)
    assert (six["score"], four["score"]) == (1, 0)
    # "longer than 5 mm": exactly 5 mm does not score, 5.25 mm does
    assert score(20)["items"][ITEMS[0]]["status"] == "not met"
    assert score(21)["items"][ITEMS[0]]["status"] == "met"
    # a single frame below 270 degrees splits the run: 3 + 3 mm is not 6 mm
    split = lesion_calcium_score([300.0] * 12 + [200.0] + [300.0] * 12, [0.25] * 25, 4.0)
    assert split["items"][ITEMS[0]]["status"] == "not met" and split["items"][ITEMS[0]]["value"] == 3.0


def test_ring_vessel_diameter_nodule_and_k_of_n():
    ring = score(0, ring=True)
    assert ring["items"][ITEMS[1]]["status"] == "met" and ring["score"] == 1
    assert score(0)["items"][ITEMS[1]]["status"] == "not met"
    small = score(24, ring=True, diameter=3.4)
    assert [small["items"][name]["status"] for name in ITEMS] == ["met", "met", "not assessed", "met"]
    assert small["score"] == 3 and small["score_text"] == "3 of 3 assessable items"
    assert small["underexpansion_risk"] == "high"
    assert score(0, diameter=3.6)["items"][ITEMS[3]]["status"] == "not met"
    for result in (score(0), small, ring):
        nodule = result["items"]["calcified_nodule"]
        assert nodule["status"] == "not assessed" and nodule["points"] is None
        assert result["assessable_items"] == 3 and "Calcified nodule" in result["not_assessed"]
    assert score(0)["underexpansion_risk"] == "low"  # 0 points + 1 unassessed item cannot reach 2
    assert ring["underexpansion_risk"] == "cannot be excluded"  # 1 point + the nodule might make 2


def test_without_lumen_or_vessel_the_items_are_not_assessed_never_zero():
    result = lesion_calcium_score([math.nan] * 10, [0.25] * 10, math.nan)
    assert [result["items"][name]["status"] for name in ITEMS] == ["not assessed"] * 4
    assert result["score_text"] == "0 of 0 assessable items" and result["underexpansion_risk"] == "cannot be excluded"
    partly = lesion_calcium_score([math.nan] * 2 + [300.0] * 22, [0.25] * 24, 4.0)
    assert partly["items"][ITEMS[0]]["status"] == "met" and "2 frame(s)" in partly["items"][ITEMS[0]]["note"]


# ------------------------------------------------------------------------------------------------- lesions

def test_gaps_up_to_the_gap_length_are_bridged():
    slabs = np.full(40, 0.25)
    flags = np.zeros(40, bool)
    flags[2:10] = flags[14:20] = flags[25:30] = True  # gaps of 4 frames (1.0 mm) and 5 frames (1.25 mm)
    flags[36] = True  # a single frame: 0.25 mm
    assert calcified_segments(flags, slabs, gap_mm=1.0, min_length_mm=0.5) == [(2, 19), (25, 29)]
    assert calcified_segments(flags, slabs, gap_mm=1.25, min_length_mm=0.5) == [(2, 29)]
    assert calcified_segments(flags, slabs, gap_mm=0.0, min_length_mm=0.0) == [(2, 9), (14, 19), (25, 29), (36, 36)]
    assert calcified_segments(np.zeros(5, bool), slabs[:5], 1.0, 0.5) == []


def test_lesion_numbers_and_their_frames():
    n = 30
    table = {name: np.zeros(n) for name in ("calcium_area_mm2", "calcium_arc_deg", "superficial_calcium_arc_deg")}
    table["lumen_area_mm2"] = np.linspace(6.0, 3.0, n)
    table["plaque_burden_percent"] = np.full(n, 50.0)
    table["vessel_diameter_mm"] = np.full(n, 4.0)
    table["calcium_area_mm2"][5:25] = 1.0
    table["calcium_arc_deg"][5:25] = np.arange(20) * 10.0
    table["calcium_arc_deg"][12] = 330.0
    table["superficial_calcium_arc_deg"][5:25] = 90.0
    table["plaque_burden_percent"][8] = 77.0
    table["vessel_diameter_mm"][12] = 3.2
    table["calcium_area_mm2"][15:17] = 0.0  # a 0.5 mm gap, bridged
    table["calcium_arc_deg"][15:17] = 0.0
    ids = [f"f{i:02d}" for i in range(n)]
    positions, slabs = np.arange(n) * 0.25, np.full(n, 0.25)
    (lesion,) = find_lesions(table, ids, positions, slabs)
    assert (lesion["first_frame"], lesion["last_frame"], lesion["first_frame_id"]) == (5, 24, "f05")
    assert (lesion["start_mm"], lesion["end_mm"], lesion["length_mm"]) == pytest.approx((1.25, 6.25, 5.0))
    assert (lesion["frames"], lesion["calcified_frames"]) == (20, 18)
    assert (lesion["max_calcium_arc_deg"], lesion["max_calcium_arc_frame"]) == (330.0, 12)
    assert lesion["max_calcium_arc_position_mm"] == pytest.approx(3.0)
    assert lesion["mean_calcium_arc_deg"] == pytest.approx(np.mean(table["calcium_arc_deg"][5:25]))
    assert (lesion["min_lumen_area_frame"], lesion["max_plaque_burden_frame"]) == (24, 8)
    assert lesion["vessel_diameter_at_max_arc_mm"] == 3.2
    assert lesion["calcium_score"]["items"][ITEMS[3]]["status"] == "met"
    assert lesion["calcium_score"]["items"][ITEMS[0]]["status"] == "not met"
