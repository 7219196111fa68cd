"""Tests of ivus_tf.measurements on masks whose answer is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.measurements import (
    angular_extent_deg,
    arc_center,
    calcium_arc_deg,
    calcium_area_mm2,
    frame_measurements,
    lumen_area_mm2,
    plaque_burden_percent,
    pullback_summary,
    vessel_area_mm2,
)

SHAPE = (200, 200)
CENTER = (100.3, 99.6)  # off the pixel grid, so no symmetry hides an error


def radius_angle(center=CENTER, shape=SHAPE):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    angle_deg = np.degrees(np.arctan2(rows - center[0], cols - center[1])) % 360
    return np.hypot(rows - center[0], cols - center[1]), angle_deg


def sector(r_inner, r_outer, start_deg, stop_deg, center=CENTER, shape=SHAPE):
    """Pixels whose centre lies in the annulus sector from start_deg to stop_deg (counter-clockwise, may wrap)."""
    radius, angle = radius_angle(center, shape)
    span = (stop_deg - start_deg) % 360 or 360
    return (radius >= r_inner) & (radius < r_outer) & (((angle - start_deg) % 360) <= span)


def disc(r, center=CENTER, shape=SHAPE):
    return radius_angle(center, shape)[0] < r


def pixelation_bound_deg(nearest_px):
    """The documented upper bias of whole-pixel footprints: 2 * atan(0.71 px / distance of the nearest pixel)."""
    return 2 * math.degrees(math.atan(math.sqrt(0.5) / nearest_px))


LUMEN = disc(30)


# --------------------------------------------------------------------------------------------------- the arc

@pytest.mark.parametrize("start, stop, expected", [(0, 90, 90), (45, 135, 90), (10, 190, 180), (200, 20, 180),
                                                   (330, 60, 90)])
def test_arc_of_annulus_sectors_within_pixelation(start, stop, expected):
    arc = calcium_arc_deg(sector(40, 60, start, stop), LUMEN)
    assert abs(arc - expected) <= pixelation_bound_deg(40)


def test_full_ring_is_360_and_thin_ring_is_not_fragmented():
    assert calcium_arc_deg(sector(40, 60, 0, 0), LUMEN) == pytest.approx(360)
    radius, angle = radius_angle()
    thin = np.abs(radius - 50) < 0.5  # one pixel wide, only 8-connected in places
    assert calcium_arc_deg(thin, LUMEN) == pytest.approx(360)
    thin_quarter = thin & (angle <= 90)
    assert abs(calcium_arc_deg(thin_quarter, LUMEN) - 90) <= pixelation_bound_deg(49.5)
    # pixel centres alone would leave gaps between diagonal neighbours; their footprints do not
    assert calcium_arc_deg(thin_quarter, LUMEN) > 89


def test_two_separate_arcs_sum_and_overlapping_arcs_count_once():
    first, second = sector(40, 50, 0, 60), sector(55, 65, 120, 150)
    both = calcium_arc_deg(first | second, LUMEN)
    assert both == pytest.approx(calcium_arc_deg(first, LUMEN) + calcium_arc_deg(second, LUMEN), abs=1e-9)
    assert abs(both - 90) <= 2 * pixelation_bound_deg(40)
    # a deeper deposit behind the first one (same angles) adds nothing beyond its own pixel footprint
    behind = sector(70, 80, 10, 50)
    assert calcium_arc_deg(first | behind, LUMEN) == pytest.approx(calcium_arc_deg(first, LUMEN), abs=0.3)


def test_arc_across_the_wrap_equals_the_same_arc_rotated():
    across = calcium_arc_deg(sector(40, 60, 315, 45), LUMEN)
    inside = calcium_arc_deg(sector(40, 60, 135, 225), LUMEN)
    assert abs(across - 90) <= pixelation_bound_deg(40)
    assert across == pytest.approx(inside, abs=0.5)


def test_single_pixel_exact_footprint():
    # a pixel at distance 10 straight right of the viewpoint spans 2 * atan(0.5 / 9.5)... exactly its near corners
    mask = np.zeros((21, 21), bool)
    mask[10, 20] = True
    assert angular_extent_deg(mask, (10, 10)) == pytest.approx(2 * math.degrees(math.atan(0.5 / 9.5)))
    mask[10, 11] = True  # neighbour of the viewpoint: its near edge is 0.5 away, spanning 2 * atan(0.5 / 0.5)
    assert angular_extent_deg(mask, (10, 10)) == pytest.approx(90)
    mask[10, 10] = True  # contains the viewpoint
    assert angular_extent_deg(mask, (10, 10)) == 360


def test_no_calcium_is_zero_and_anisotropic_spacing_uses_mm():
    assert calcium_arc_deg(np.zeros(SHAPE, bool), LUMEN) == 0.0
    # the diagonal pixel seen from the origin: 45 degrees in pixels, atan(2) in mm with rows twice as long
    mask = np.zeros((40, 40), bool)
    mask[30, 30] = True
    centre = (0, 0)
    extent_iso = angular_extent_deg(mask, centre, 1.0)
    extent_aniso = angular_extent_deg(mask, centre, (0.2, 0.1))
    assert extent_iso != pytest.approx(extent_aniso)
    rows, cols = np.array([29.5, 29.5, 30.5, 30.5]) * 0.2, np.array([29.5, 30.5, 29.5, 30.5]) * 0.1
    angles = np.degrees(np.arctan2(rows, cols))
    assert extent_aniso == pytest.approx(angles.max() - angles.min())


def test_arc_center_fallbacks():
    labels = np.zeros(SHAPE, np.uint8)
    labels[disc(60)] = 2
    labels[disc(30)] = 1
    row, col, source = arc_center(SHAPE, labels == 1, labels != 0)
    assert source == "lumen" and (row, col) == pytest.approx(CENTER, abs=0.05)
    # a stray lumen blob in a corner does not move the viewpoint (largest region)
    stray = labels == 1
    stray[5:9, 5:9] = True
    assert arc_center(SHAPE, stray, labels != 0)[:2] == pytest.approx((row, col), abs=0.05)
    ring_only = labels == 2
    assert arc_center(SHAPE, np.zeros(SHAPE, bool), ring_only)[2] == "vessel"
    assert arc_center(SHAPE, np.zeros(SHAPE, bool), ring_only)[:2] == pytest.approx(CENTER, abs=0.05)
    assert arc_center(SHAPE, None, None) == (99.5, 99.5, "image")
    assert arc_center(SHAPE, np.zeros(SHAPE, bool), np.zeros(SHAPE, bool))[2] == "image"
    # frame_measurements uses the same rule: a quarter sector centred on the image centre, no wall-lumen labels
    quarter = sector(40, 60, 0, 90, center=(99.5, 99.5))
    result = frame_measurements(quarter, None, 0.02)
    assert result["arc_center"] == "image" and abs(result["calcium_arc_deg"] - 90) <= pixelation_bound_deg(40)
    assert math.isnan(result["lumen_area_mm2"]) and math.isnan(result["plaque_burden_percent"])


# ------------------------------------------------------------------------------------------------------ areas

def test_quarter_annulus_area_and_spacing_squared():
    mask = sector(40, 60, 0, 90)
    expected_px = math.pi * (60 ** 2 - 40 ** 2) / 4  # 1570.8 pixels
    assert calcium_area_mm2(mask, 1.0) == pytest.approx(expected_px, rel=0.02)
    assert calcium_area_mm2(mask, 0.02) == pytest.approx(expected_px * 0.02 ** 2, rel=0.02)
    assert calcium_area_mm2(mask, 0.04) == pytest.approx(4 * calcium_area_mm2(mask, 0.02))
    assert calcium_area_mm2(mask, (0.02, 0.03)) == pytest.approx(mask.sum() * 0.02 * 0.03)
    with pytest.raises(InputError, match="finite and > 0"):
        calcium_area_mm2(mask, 0)


def test_concentric_discs_lumen_vessel_and_plaque_burden():
    labels = np.zeros(SHAPE, np.uint8)
    labels[disc(50)] = 2
    labels[disc(30)] = 1
    spacing = 0.02
    assert lumen_area_mm2(labels, spacing) == pytest.approx(math.pi * (30 * spacing) ** 2, rel=0.01)
    assert vessel_area_mm2(labels, spacing) == pytest.approx(math.pi * (50 * spacing) ** 2, rel=0.01)
    # (pi 50^2 - pi 30^2) / (pi 50^2) = 1 - 9/25 = 64 %
    assert plaque_burden_percent(labels) == pytest.approx(64, abs=0.5)
    assert plaque_burden_percent(labels) == pytest.approx(
        100 * (labels != 0).sum().__sub__((labels == 1).sum()) / (labels != 0).sum())
    assert math.isnan(plaque_burden_percent(np.zeros((4, 4), np.uint8)))
    assert plaque_burden_percent(np.where(labels == 2, 0, labels)) == 0.0  # lumen only: no plaque


def test_frame_measurements_all_columns():
    labels = np.zeros(SHAPE, np.uint8)
    labels[disc(60)] = 2
    labels[disc(30)] = 1
    calcium = sector(40, 55, 0, 180) & (labels == 2)
    result = frame_measurements(calcium, labels, 0.02)
    assert result["arc_center"] == "lumen"
    assert abs(result["calcium_arc_deg"] - 180) <= pixelation_bound_deg(40)
    assert result["calcium_area_mm2"] == pytest.approx(calcium.sum() * 0.0004)
    assert result["lumen_area_mm2"] == pytest.approx(lumen_area_mm2(labels, 0.02))
    assert result["vessel_area_mm2"] == pytest.approx(vessel_area_mm2(labels, 0.02))
    assert result["plaque_burden_percent"] == pytest.approx(plaque_burden_percent(labels))
    no_calcium = frame_measurements(np.zeros(SHAPE, np.uint8), labels, 0.02)
    assert no_calcium["calcium_area_mm2"] == 0 and no_calcium["calcium_arc_deg"] == 0
    with pytest.raises(InputError, match="shapes differ"):
        frame_measurements(np.zeros((10, 10), bool), labels, 0.02)


# ------------------------------------------------------------------------------------------------- pullback

def rows_of(arcs):
    return [{"calcium_area_mm2": 0.5 if arc > 0 else 0.0, "calcium_arc_deg": arc} for arc in arcs]


def test_pullback_summary_counts_without_lengths():
    arcs = [0, 30, 200, 0, 280, 300, 0, 0, 90, 0]
    summary = pullback_summary(rows_of(arcs))
    assert summary["frames"] == 10
    assert summary["frames_with_calcium"] == 5
    assert summary["calcium_segments"] == 3  # [30, 200], [280, 300], [90]
    assert summary["max_calcium_arc_deg"] == 300
    assert summary["frames_with_arc_over_180"] == 3
    assert summary["frames_with_arc_over_270"] == 2
    assert summary["longest_calcium_run_frames"] == 2
    assert summary["longest_arc_over_270_run_frames"] == 2
    assert summary["calcium_length_mm"] is None and summary["arc_over_270_for_5mm"] is None
    # one of speed and rate is not enough for a length
    assert pullback_summary(rows_of(arcs), pullback_speed_mm_s=0.5)["calcium_length_mm"] is None


def test_pullback_summary_lengths_and_calcium_score_criterion():
    # 0.5 mm/s at 10 frames/s: 0.05 mm per frame; 100 consecutive frames over 270 degrees = 5 mm exactly
    arcs = [0] * 5 + [300] * 100 + [0] + [100] * 20 + [0] * 3
    summary = pullback_summary(rows_of(arcs), pullback_speed_mm_s=0.5, frame_rate_hz=10)
    assert summary["frame_interval_mm"] == pytest.approx(0.05)
    assert summary["calcium_length_mm"] == pytest.approx(120 * 0.05)
    assert summary["longest_calcium_segment_mm"] == pytest.approx(5.0)
    assert summary["longest_arc_over_270_mm"] == pytest.approx(5.0)
    assert summary["arc_over_270_for_5mm"] is True
    shorter = pullback_summary(rows_of(arcs[:50] + [0] + arcs[51:]), pullback_speed_mm_s=0.5, frame_rate_hz=10)
    assert shorter["arc_over_270_for_5mm"] is False  # one frame without calcium ends a run
    assert shorter["calcium_segments"] == 3


def test_pullback_summary_edge_cases():
    empty = pullback_summary([])
    assert empty["frames"] == 0 and math.isnan(empty["max_calcium_arc_deg"])
    assert pullback_summary(rows_of([0, 0]))["max_calcium_arc_deg"] == 0
    with pytest.raises(InputError, match="frame_rate_hz"):
        pullback_summary(rows_of([0]), pullback_speed_mm_s=0.5, frame_rate_hz=0)


# ------------------------------------------------------------------------------------------ arc gap bridging

def fragments(start_deg, span_deg, pieces, gap_deg, r_inner=80, r_outer=90):
    """A `span_deg` arc from `start_deg` cut into `pieces` equal pieces separated by `gap_deg` gaps."""
    piece = (span_deg - (pieces - 1) * gap_deg) / pieces
    mask = np.zeros(SHAPE, bool)
    for i in range(pieces):
        begin = start_deg + i * (piece + gap_deg)
        mask |= sector(r_inner, r_outer, begin % 360, (begin + piece) % 360)
    return mask


@pytest.mark.parametrize("start", [10, 250])  # the second one crosses 0 degrees
def test_fragmented_arc_is_bridged_back_to_its_span(start):
    arc = fragments(start, 180, 6, 5)
    bound = pixelation_bound_deg(80)
    unbridged = calcium_arc_deg(arc, LUMEN)
    bridged = calcium_arc_deg(arc, LUMEN, gap_deg=20)
    assert 155 - 1e-9 <= unbridged <= 155 + 6 * bound  # each piece's footprint adds at most one bound
    assert abs(bridged - 180) <= bound
    # gaps as wide as the threshold are not bridged; gaps just narrower are
    assert calcium_arc_deg(arc, LUMEN, gap_deg=4) == pytest.approx(unbridged)
    assert abs(calcium_arc_deg(arc, LUMEN, gap_deg=5) - 180) <= bound
    result = frame_measurements(arc, np.where(LUMEN, 1, 0).astype(np.uint8), 0.02)
    assert result["calcium_arc_deg"] == pytest.approx(bridged)  # frame_measurements bridges by default
    assert result["calcium_arc_unbridged_deg"] == pytest.approx(unbridged)
    assert frame_measurements(arc, None, 0.02, arc_gap_deg=0)["calcium_arc_deg"] == pytest.approx(
        frame_measurements(arc, None, 0.02)["calcium_arc_unbridged_deg"])


def test_separate_calcifications_and_different_depths_are_not_bridged():
    two = sector(80, 90, 0, 45) | sector(80, 90, 135, 180)  # 90 degrees apart
    assert calcium_arc_deg(two, LUMEN, gap_deg=30) == pytest.approx(calcium_arc_deg(two, LUMEN))
    # a superficial and a deep deposit 5 degrees apart in angle: 30 px = 0.6 mm apart in depth at 0.02 mm
    near, deep = sector(40, 50, 0, 60), sector(80, 90, 65, 120)
    both = near | deep
    unbridged = calcium_arc_deg(both, LUMEN, pixel_spacing_mm=0.02)
    assert calcium_arc_deg(both, LUMEN, pixel_spacing_mm=0.02, gap_deg=20) == pytest.approx(unbridged)
    # the same layout seen as depths 0.3 mm apart (0.01 mm pixels) is one leading edge: bridged
    assert calcium_arc_deg(both, LUMEN, pixel_spacing_mm=0.01, gap_deg=20) > unbridged + 3
    # a closed-up ring stays 360, bridged or not; no calcium stays 0
    almost_ring = sector(80, 90, 0, 350)
    assert calcium_arc_deg(almost_ring, LUMEN, gap_deg=20) == 360
    assert calcium_arc_deg(almost_ring, LUMEN, gap_deg=5) == pytest.approx(calcium_arc_deg(almost_ring, LUMEN))
    assert calcium_arc_deg(np.zeros(SHAPE, bool), LUMEN, gap_deg=20) == 0
    with pytest.raises(InputError, match="gap_deg"):
        calcium_arc_deg(two, LUMEN, gap_deg=-1)
