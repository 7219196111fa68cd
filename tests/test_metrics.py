"""Tests of ivus_tf.metrics: hand-computed tiny cases, empty-mask rules, and a brute-force pairwise reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from ivus_tf import metrics as metrics_module
from ivus_tf.metrics import (
    EMPTY_CASES,
    average_hausdorff_mm,
    boundary,
    dice,
    directed_mean_distances_mm,
    empty_case,
    evaluate_frame,
    image_diagonal_mm,
    summarize_frames,
    summarize_wall_lumen,
    validate_pixel_spacing_mm,
    wall_lumen_metrics,
)

SQRT2 = math.sqrt(2.0)


def mask(shape, *pixels):
    out = np.zeros(shape, bool)
    for pixel in pixels:
        out[pixel] = True
    return out


def brute_force_mhd(pred, target, pixel_spacing_mm, points="all"):
    """Reference: all pairwise distances (cdist) between pixel centres; the contour found by explicit neighbours."""
    def point_set(m):
        m = np.asarray(m) != 0
        if points == "boundary":
            p = np.pad(m, 1)  # outside the image counts as background
            interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
            m = m & ~interior
        return np.argwhere(m) * np.broadcast_to(np.asarray(pixel_spacing_mm, float), (2,))
    distances = cdist(point_set(pred), point_set(target))
    return max(distances.min(axis=1).mean(), distances.min(axis=0).mean())


# --------------------------------------------------------------------------------------------- hand-computed

def test_dice_3x3_hand_computed():
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    target = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    # |A| = 3, |B| = 4, |A & B| = 2 ((0,0) and (1,1)): 2 * 2 / 7
    assert dice(pred, target) == pytest.approx(4 / 7)
    assert dice(pred, pred) == 1.0
    assert dice(pred, ~pred.astype(bool)) == 0.0


def test_two_pixels_3x3_opposite_corners():
    # one point each, at (0,0) and (2,2): every directed mean is the single distance sqrt(2^2 + 2^2)
    pred, target = mask((3, 3), (0, 0)), mask((3, 3), (2, 2))
    assert average_hausdorff_mm(pred, target, 0.5) == pytest.approx(0.5 * 2 * SQRT2)
    assert average_hausdorff_mm(pred, target, 0.5, points="boundary") == pytest.approx(0.5 * 2 * SQRT2)
    assert dice(pred, target) == 0.0


def test_max_of_directed_means_not_their_average_3x3():
    pred = mask((3, 3), (0, 0), (0, 1))
    target = mask((3, 3), (0, 0))
    # d(pred, target) = mean(0, 1) = 0.5; d(target, pred) = 0; MHD = max = 0.5 (the average would be 0.25)
    assert directed_mean_distances_mm(pred, target, 1.0) == pytest.approx((0.5, 0.0))
    assert average_hausdorff_mm(pred, target, 1.0) == pytest.approx(0.5)
    assert dice(pred, target) == pytest.approx(2 * 1 / 3)


def test_anisotropic_spacing_3x3():
    # rows 2.0 mm apart, columns 0.5 mm: (0,0) to (1,1) is sqrt(2.0^2 + 0.5^2)
    pred, target = mask((3, 3), (0, 0)), mask((3, 3), (1, 1))
    assert average_hausdorff_mm(pred, target, (2.0, 0.5)) == pytest.approx(math.sqrt(4.25))
    # (0,0) to (0,2) is along a row: 2 columns * 0.5 mm
    assert average_hausdorff_mm(pred, mask((3, 3), (0, 2)), (2.0, 0.5)) == pytest.approx(1.0)


def test_filled_square_vs_centre_pixel_5x5():
    pred = np.zeros((5, 5), bool)
    pred[1:4, 1:4] = True  # 3x3 block
    target = mask((5, 5), (2, 2))
    # Dice: 2 * 1 / (9 + 1)
    assert dice(pred, target) == pytest.approx(0.2)
    # all points: from the 9 block pixels to the centre: 0, four at 1, four at sqrt(2) -> (4 + 4 sqrt 2) / 9;
    # from the centre to the block: 0
    assert average_hausdorff_mm(pred, target, 1.0) == pytest.approx((4 + 4 * SQRT2) / 9)
    # boundary: the block's contour is its 8-pixel ring (the centre has all 4 neighbours inside), the single
    # pixel is its own contour: ring -> centre = (4 + 4 sqrt 2) / 8; centre -> ring = 1; max = (1 + sqrt 2) / 2
    assert average_hausdorff_mm(pred, target, 1.0, points="boundary") == pytest.approx((1 + SQRT2) / 2)


def test_boundary_uses_4_neighbours_and_image_edge():
    plus = np.array([[0, 0, 0, 0, 0],
                     [0, 0, 1, 0, 0],
                     [0, 1, 1, 1, 0],
                     [0, 0, 1, 0, 0],
                     [0, 0, 0, 0, 0]])
    # the centre has all four 4-neighbours in the mask (background only diagonally): interior, not contour
    expected = plus.astype(bool).copy()
    expected[2, 2] = False
    np.testing.assert_array_equal(boundary(plus), expected)
    # a full 3x3 image: the image edge counts as background, so only the centre is interior
    full = np.ones((3, 3), bool)
    np.testing.assert_array_equal(boundary(full), ~mask((3, 3), (1, 1)))
    # thin structures are all contour
    line = np.zeros((5, 5), int)
    line[1:4, 2] = 7
    np.testing.assert_array_equal(boundary(line), line != 0)


# ------------------------------------------------------------------------------------------------ translation

@pytest.mark.parametrize("k", [1, 2, 3, 7])
@pytest.mark.parametrize("points", ["all", "boundary"])
def test_thin_line_shifted_by_k_is_exactly_k(k, points):
    # a one-pixel-wide vertical line shifted by k columns: every point's nearest point in the other line is its
    # own translate (same row, distance k); the line is its own contour, so both point sets give k * spacing
    pred, target = np.zeros((9, 20), bool), np.zeros((9, 20), bool)
    pred[2:7, 3] = True
    target[2:7, 3 + k] = True
    assert average_hausdorff_mm(pred, target, 0.25, points=points) == pytest.approx(0.25 * k)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_filled_square_shifted_by_k_all_points(k):
    # n x n square (n = 5), shifted by k <= n columns: a pixel in column c of A is inside B for c >= k and at
    # distance k - c (same row, B's first column) for c < k, so d(A, B) = sum_{c<k} (k - c) / n = k (k + 1) / (2 n)
    # -- not k. By mirror symmetry d(B, A) is the same. k = 1: 0.2, k = 2: 0.6, k = 5 (touching): 3.0.
    n, spacing = 5, 0.1
    pred, target = np.zeros((7, 14), bool), np.zeros((7, 14), bool)
    pred[1:1 + n, 1:1 + n] = True
    target[1:1 + n, 1 + k:1 + n + k] = True
    expected = k * (k + 1) / (2 * n)
    assert average_hausdorff_mm(pred, target, spacing) == pytest.approx(spacing * expected)
    assert average_hausdorff_mm(target, pred, spacing) == pytest.approx(spacing * expected)


def test_filled_square_disjoint_shift():
    # k >= n: every pixel of column c is k - c from B, mean over c = 0..n-1: k - (n - 1) / 2; n = 5, k = 8 -> 6
    pred, target = np.zeros((7, 16), bool), np.zeros((7, 16), bool)
    pred[1:6, 1:6] = True
    target[1:6, 9:14] = True
    assert average_hausdorff_mm(pred, target, 1.0) == pytest.approx(6.0)


@pytest.mark.parametrize("k, expected", [(1, 0.5), (2, 1.0)])
def test_square_contour_shifted_by_k(k, expected):
    # 5x5 square, contour = 16-pixel ring, local coordinates r, c in 0..4; B's ring is shifted by k columns.
    # k = 1: top row: c = 0 is 1 away (B's corner (0,1)), c >= 1 on B's top row: 1; bottom row likewise: 1;
    #        left column r = 1..3: B's left column is 1 away: 3; right column (c = 4) r = 1..3: B's right column
    #        (c = 5) is 1 away: 3. Total 8 / 16 = 0.5.
    # k = 2: top row c = 0, 1: 2 + 1 = 3; bottom: 3; left column: 3 * 2 = 6; right column (c = 4), r = 1..3:
    #        min(B's right column 2, B's top corner (0,4) r, B's bottom corner (4,4) 4 - r) = 1, 2, 1: 4.
    #        Total 16 / 16 = 1.0. By mirror symmetry d(B, A) is the same.
    pred, target = np.zeros((7, 10), bool), np.zeros((7, 10), bool)
    pred[1:6, 1:6] = True
    target[1:6, 1 + k:6 + k] = True
    assert average_hausdorff_mm(pred, target, 1.0, points="boundary") == pytest.approx(expected)
    assert average_hausdorff_mm(pred, target, 1.0, points="boundary") == pytest.approx(
        brute_force_mhd(pred, target, 1.0, "boundary"))


# ------------------------------------------------------------------------------------ symmetry and scaling

def random_blob(rng, shape, density):
    """Smoothed-noise blobs (interior and contour both non-trivial) with roughly `density` foreground."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=rng.uniform(0.5, 3))
    return field > np.quantile(field, 1 - density)


@pytest.mark.parametrize("points", ["all", "boundary"])
def test_symmetric_and_scales_with_spacing(points):
    rng = np.random.default_rng(1)
    for _ in range(5):
        pred, target = random_blob(rng, (30, 40), 0.2), random_blob(rng, (30, 40), 0.1)
        distance = average_hausdorff_mm(pred, target, (0.03, 0.05), points=points)
        assert average_hausdorff_mm(target, pred, (0.03, 0.05), points=points) == distance
        assert average_hausdorff_mm(pred, target, (0.06, 0.10), points=points) == pytest.approx(2 * distance)
        d_ab, d_ba = directed_mean_distances_mm(pred, target, (0.03, 0.05), points=points)
        assert directed_mean_distances_mm(target, pred, (0.03, 0.05), points=points) == (d_ba, d_ab)
        assert dice(pred, target) == dice(target, pred)


# ------------------------------------------------------------------------------------------- brute force

@pytest.mark.parametrize("points", ["all", "boundary"])
@pytest.mark.parametrize("shape, density, spacing", [
    ((1, 1), 1.0, 0.3), ((1, 17), 0.3, 0.02), ((13, 1), 0.5, (0.7, 0.1)), ((7, 13), 0.05, 1.0),
    ((32, 32), 0.5, 0.026), ((40, 25), 0.95, (0.02, 0.05)), ((64, 48), 0.01, 0.1),
])
def test_agrees_with_pairwise_reference_on_random_masks(points, shape, density, spacing):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    for trial in range(6):
        make = random_blob if trial % 2 else (lambda r, s, d: r.random(s) < d)
        pred, target = make(rng, shape, density), make(rng, shape, min(1.0, density * rng.uniform(0.5, 1.5)))
        pred.flat[rng.integers(pred.size)] = True  # never empty
        target.flat[rng.integers(target.size)] = True
        expected = brute_force_mhd(pred, target, spacing, points)
        assert average_hausdorff_mm(pred, target, spacing, points=points) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("points", ["all", "boundary"])
def test_agrees_with_reference_when_masks_are_small_in_a_large_frame(points):
    # the implementation crops to the masks' bounding box: masks far from the image edge, touching the box edge
    rng = np.random.default_rng(7)
    for _ in range(4):
        pred, target = np.zeros((200, 180), bool), np.zeros((200, 180), bool)
        pred[60:90, 50:70] = random_blob(rng, (30, 20), 0.5)
        target[75:110, 65:80] = random_blob(rng, (35, 15), 0.4)
        expected = brute_force_mhd(pred, target, 0.026, points)
        assert average_hausdorff_mm(pred, target, 0.026, points=points) == pytest.approx(expected, rel=1e-12)


@pytest.fixture(params=["default", "one thread"])
def opencv_threads(request):
    """Both of OpenCV's exact distance transforms: its own (threaded) and Intel IPP's (one thread, small images)."""
    import cv2

    threads = cv2.getNumThreads()
    if request.param == "one thread":
        cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(threads)


def test_opencv_distances_are_exact_on_large_frames(opencv_threads):
    # OpenCV's float32 distances, squared and rounded, are the exact integer squared distances: equal to scipy's
    # feature transform (which the brute-force tests pin) on full 500x500 frames and the largest crops it takes
    rng = np.random.default_rng(11)
    for shape in [(500, 500), (512, 512), (700, 720), (90, 600), (120, 130)]:
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        disc = np.hypot(yy - shape[0] * rng.uniform(0.3, 0.7), xx - shape[1] * rng.uniform(0.3, 0.7))
        for target in (disc < 0.45 * min(shape), random_blob(rng, shape, 0.02), rng.random(shape) < 0.001):
            target.flat[rng.integers(target.size)] = True
            at = ~target
            fast = metrics_module._distances_opencv_mm(target, at, 0.026)
            exact = metrics_module._distances_scipy_mm(target, at, (0.026, 0.026))
            np.testing.assert_allclose(fast, exact, rtol=1e-14, atol=0)


def test_agrees_with_pairwise_reference_on_frames_opencv_handles(opencv_threads):
    rng = np.random.default_rng(12)
    for points in ("all", "boundary"):
        pred, target = random_blob(rng, (140, 150), 0.1), random_blob(rng, (140, 150), 0.08)
        pred[0, 0] = target[-1, -1] = True  # the crop is the whole frame
        expected = brute_force_mhd(pred, target, 0.026, points)
        assert average_hausdorff_mm(pred, target, 0.026, points=points) == pytest.approx(expected, rel=1e-12)


def test_integer_and_bool_masks_agree():
    rng = np.random.default_rng(3)
    pred, target = random_blob(rng, (20, 20), 0.3), random_blob(rng, (20, 20), 0.3)
    as_uint8 = (pred * 255).astype(np.uint8), (target * 3).astype(np.int64)
    as_float = pred.astype(np.float32), target.astype(np.float64)
    for p, t in (as_uint8, as_float):
        assert evaluate_frame(p, t, 0.1) == evaluate_frame(pred, target, 0.1)


# ------------------------------------------------------------------------------------------------ empty masks

def test_both_empty():
    empty = np.zeros((3, 4), bool)
    assert evaluate_frame(empty, empty, 0.5) == {"dice": 1.0, "average_hausdorff_mm": 0.0,
                                                 "empty_case": "both_empty"}
    assert average_hausdorff_mm(empty, empty, 0.5, empty="nan") == 0.0


def test_one_empty_gives_image_diagonal_or_nan():
    # 3 x 4 pixels of 0.5 mm: a 1.5 mm x 2.0 mm field, diagonal 2.5 mm
    empty, one = np.zeros((3, 4), bool), mask((3, 4), (1, 1))
    assert image_diagonal_mm((3, 4), 0.5) == pytest.approx(2.5)
    assert evaluate_frame(empty, one, 0.5) == {"dice": 0.0, "average_hausdorff_mm": pytest.approx(2.5),
                                               "empty_case": "pred_empty"}
    assert evaluate_frame(one, empty, 0.5, points="boundary")["empty_case"] == "target_empty"
    assert average_hausdorff_mm(one, empty, 0.5, points="boundary") == pytest.approx(2.5)
    assert math.isnan(average_hausdorff_mm(empty, one, 0.5, empty="nan"))
    assert math.isnan(evaluate_frame(one, empty, 0.5, empty="nan")["average_hausdorff_mm"])
    # anisotropic: 3 rows of 1.0 mm, 4 columns of 1.0 mm -> 5 mm
    assert average_hausdorff_mm(one, empty, (1.0, 1.0)) == pytest.approx(5.0)
    # the diagonal exceeds any distance a detection can have in the frame
    corners = mask((3, 4), (0, 0)), mask((3, 4), (2, 3))
    assert average_hausdorff_mm(*corners, 0.5) < image_diagonal_mm((3, 4), 0.5)


def test_empty_case_names():
    empty, one = np.zeros((2, 2)), np.eye(2)
    assert [empty_case(one, one), empty_case(empty, empty), empty_case(empty, one), empty_case(one, empty)] == \
        list(EMPTY_CASES)
    with pytest.raises(ValueError, match="non-empty"):
        directed_mean_distances_mm(empty, one, 1.0)


# --------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("pred, target, spacing, message", [
    (np.zeros((3, 3)), np.zeros((3, 4)), 1.0, "shapes differ"),
    (np.zeros((3, 3, 1)), np.zeros((3, 3, 1)), 1.0, "2-D"),
    (np.zeros(3), np.zeros(3), 1.0, "2-D"),
    (np.full((2, 2), 0.5), np.zeros((2, 2)), 1.0, "values other than 0 and 1"),
    (np.zeros((2, 2)), np.zeros((2, 2)), 0.0, "finite and > 0"),
    (np.zeros((2, 2)), np.zeros((2, 2)), -0.1, "finite and > 0"),
    (np.zeros((2, 2)), np.zeros((2, 2)), math.nan, "finite and > 0"),
    (np.zeros((2, 2)), np.zeros((2, 2)), (0.1, math.inf), "finite and > 0"),
    (np.zeros((2, 2)), np.zeros((2, 2)), (0.1, 0.1, 0.1), "pair"),
    (np.zeros((2, 2)), np.zeros((2, 2)), "abc", "pair"),
])
def test_bad_inputs_raise_value_error(pred, target, spacing, message):
    with pytest.raises(ValueError, match=message):
        evaluate_frame(pred, target, spacing)


def test_bad_options_and_spacing_forms():
    one = np.eye(3)
    with pytest.raises(ValueError, match="points must be one of"):
        average_hausdorff_mm(one, one, 1.0, points="contour")
    with pytest.raises(ValueError, match="empty must be one of"):
        average_hausdorff_mm(one, one, 1.0, empty="zero")
    assert validate_pixel_spacing_mm(0.026) == (0.026, 0.026)
    assert validate_pixel_spacing_mm([0.02, 0.03]) == (0.02, 0.03)


# ------------------------------------------------------------------------------------------------ wall-lumen

def test_wall_lumen_metrics_hand_computed_5x5():
    target = np.array([[0, 0, 0, 0, 0],
                       [0, 2, 2, 2, 0],
                       [0, 2, 1, 2, 0],
                       [0, 2, 2, 2, 0],
                       [0, 0, 0, 0, 0]])
    pred = target.copy()
    pred[2, 2] = 2   # lumen missed: pred lumen empty
    pred[0, 2] = 2   # one extra wall pixel
    result = wall_lumen_metrics(pred, target, 0.5)
    # lumen: pred empty, target one pixel: Dice 0, distance = diagonal of 2.5 mm x 2.5 mm
    assert result["lumen"] == {"dice": 0.0, "average_hausdorff_mm": pytest.approx(2.5 * SQRT2),
                               "empty_case": "pred_empty"}
    # wall: pred 10 pixels (ring 8 + centre + (0,2)), target 8: overlap 8 -> Dice 16 / 18.
    # d(pred, target): the centre and (0,2) are each 1 pixel from the ring, others 0: 2 / 10 pixels * 0.5 mm
    assert result["vessel_wall"]["dice"] == pytest.approx(16 / 18)
    assert result["vessel_wall"]["average_hausdorff_mm"] == pytest.approx(0.1)
    # vessel (labels 1 | 2): pred 10 pixels, target 9, overlap 9 -> Dice 18 / 19; only (0,2) is off, 1 pixel
    assert result["vessel"]["dice"] == pytest.approx(18 / 19)
    assert result["vessel"]["average_hausdorff_mm"] == pytest.approx(0.5 * 1 / 10)
    # mean over lumen and vessel wall only (paper, Figure 4)
    assert result["mean"]["dice"] == pytest.approx((0 + 16 / 18) / 2)
    assert result["mean"]["average_hausdorff_mm"] == pytest.approx((2.5 * SQRT2 + 0.1) / 2)
    assert math.isnan(wall_lumen_metrics(pred, target, 0.5, empty="nan")["mean"]["average_hausdorff_mm"])


def test_wall_lumen_rejects_unknown_labels_and_shapes():
    good = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="pred_labels has values 3; expected 0 background, 1 lumen, 2 vessel wall"):
        wall_lumen_metrics(good + 3, good, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        wall_lumen_metrics(good, good[:3], 1.0)


# ---------------------------------------------------------------------------------------------- aggregation

def test_summarize_frames_hand_computed():
    results = [
        {"dice": 1.0, "average_hausdorff_mm": 0.0, "empty_case": "both_empty"},
        {"dice": 0.5, "average_hausdorff_mm": 0.2, "empty_case": "both_present"},
        {"dice": 0.0, "average_hausdorff_mm": math.nan, "empty_case": "pred_empty"},
        {"dice": 0.5, "average_hausdorff_mm": 0.4, "empty_case": "both_present"},
    ]
    summary = summarize_frames(results)
    assert summary["frames"] == 4
    assert summary["empty_cases"] == {"both_present": 2, "both_empty": 1, "pred_empty": 1, "target_empty": 0}
    # Dice 1, .5, 0, .5: mean .5, sample variance (.25 + 0 + .25 + 0) / 3 -> std sqrt(1/6), median .5
    assert summary["dice"] == {"mean": 0.5, "std": pytest.approx(math.sqrt(1 / 6)), "median": 0.5,
                               "n": 4, "n_nan": 0}
    # distances 0, .2, .4 (the NaN is left out and counted): mean .2, std .2 (ddof=1), median .2
    assert summary["average_hausdorff_mm"] == {"mean": pytest.approx(0.2), "std": pytest.approx(0.2),
                                               "median": pytest.approx(0.2), "n": 3, "n_nan": 1}
    one = summarize_frames(results[:1])
    assert one["dice"]["mean"] == 1.0 and math.isnan(one["dice"]["std"])


def test_summarize_wall_lumen_regions():
    target = np.zeros((6, 6), np.uint8)
    target[1:5, 1:5], target[2:4, 2:4] = 2, 1
    results = [wall_lumen_metrics(target, target, 0.1), wall_lumen_metrics(np.zeros_like(target), target, 0.1)]
    summary = summarize_wall_lumen(results)
    assert set(summary) == {"lumen", "vessel_wall", "vessel", "mean"}
    assert summary["lumen"]["empty_cases"]["pred_empty"] == 1
    assert summary["lumen"]["dice"]["mean"] == pytest.approx(0.5)
    assert "empty_cases" not in summary["mean"]
    assert summary["mean"]["average_hausdorff_mm"]["mean"] == pytest.approx(image_diagonal_mm((6, 6), 0.1) / 2)
