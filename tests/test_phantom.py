"""The phantom: deterministic, anatomically consistent labels, and the acoustics that make calcium calcium."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from tfrecords_builder.phantom import PRESETS, PhantomConfig, generate_dataset, render_case_frames
from tfrecords_builder.phantom import acoustics

SMALL = dataclasses.replace(PRESETS["default"], image_size=200, pixel_spacing_mm=0.05, a_lines=512)


def _frames(config=SMALL, seed=0, case=0, frames=4):
    return list(render_case_frames(config, seed, case, frames))


def _polar(shape, spacing):
    centre = (shape[0] - 1) / 2
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - centre, xx - centre) * spacing, np.arctan2(yy - centre, xx - centre)


def test_same_seed_same_frames_and_case_independent_of_dataset_size():
    a = _frames(seed=3, case=1)
    b = _frames(seed=3, case=1)
    c = _frames(seed=4, case=1)
    for (_, _, img_a, ca_a, wl_a), (_, _, img_b, ca_b, wl_b) in zip(a, b):
        assert np.array_equal(img_a, img_b) and np.array_equal(ca_a, ca_b) and np.array_equal(wl_a, wl_b)
    assert not np.array_equal(a[0][2], c[0][2])


def test_labels_are_anatomically_consistent():
    calcium_frames = 0
    for case in range(6):
        for _, _, image, calcium, wall_lumen in _frames(case=case, frames=3):
            assert image.dtype == np.uint8 and image.shape == (200, 200)
            assert set(np.unique(wall_lumen)) <= {0, 1, 2}
            # calcium sits inside the vessel wall (between lumen and EEM), never in the lumen or outside the EEM
            assert np.all(wall_lumen[calcium] == 2)
            # the catheter (image centre) is inside the lumen
            assert wall_lumen[99:101, 99:101].min() == 1
            radius_mm, _ = _polar(image.shape, SMALL.pixel_spacing_mm)
            # the field of view is a disc: nothing is drawn outside it
            assert image[radius_mm > 5.0 + 0.05].max() == 0
            calcium_frames += bool(calcium.any())
    assert 0 < calcium_frames < 18


def _calcium_frames(config, count=6):
    found = []
    for case in range(40):
        for _, _, image, calcium, wall_lumen in _frames(config, case=case, frames=3):
            if calcium.sum() > 30:
                found.append((image, calcium, wall_lumen))
        if len(found) >= count:
            return found
    return found


def test_calcium_is_bright_and_casts_an_acoustic_shadow():
    config = dataclasses.replace(SMALL, guidewire_probability=0.0, side_branches_per_10mm=0.0)
    frames = _calcium_frames(config)
    assert len(frames) >= 4
    for image, calcium, wall_lumen in frames:
        radius, angle = _polar(image.shape, config.pixel_spacing_mm)
        bins = np.round((angle + np.pi) / (2 * np.pi) * 180).astype(int) % 180
        outer = np.zeros(180)
        np.maximum.at(outer, bins[calcium], radius[calcium])
        shadowed_bins = outer > 0
        behind = shadowed_bins[bins] & (radius > outer[bins] + 0.3) & (radius < 4.5)
        clear_bins = ~np.convolve(np.tile(shadowed_bins, 3), np.ones(9), "same")[180:360].astype(bool)
        beside = clear_bins[bins] & (radius > np.median(outer[shadowed_bins]) + 0.3) & (radius < 4.5)
        tissue = (wall_lumen == 2) & ~calcium
        assert image[calcium].mean() > image[tissue].mean() + 25  # bright leading layer
        if beside.sum() > 200:
            assert image[behind].mean() < 0.5 * image[beside].mean()  # the shadow


def test_lumen_is_darker_than_the_wall():
    for _, _, image, _, wall_lumen in _frames(case=2, frames=3):
        radius_mm, _ = _polar(image.shape, SMALL.pixel_spacing_mm)
        lumen = (wall_lumen == 1) & (radius_mm > SMALL.catheter_radius_mm + 0.35)  # beyond the ring-down
        assert image[lumen].mean() < image[wall_lumen == 2].mean()


def test_guidewire_casts_a_narrow_shadow_inside_the_lumen():
    config = dataclasses.replace(SMALL, guidewire_probability=1.0, calcium_segments_per_10mm=0.0)
    _, _, image, _, wall_lumen = _frames(config, case=5, frames=1)[0]
    radius, angle = _polar(image.shape, config.pixel_spacing_mm)
    ring = (radius > 3.0) & (radius < 4.5)
    bins = np.round((angle[ring] + np.pi) / (2 * np.pi) * 90).astype(int) % 90
    profile = np.bincount(bins, image[ring], 90) / np.maximum(np.bincount(bins, None, 90), 1)
    dark = profile < 0.35 * np.median(profile)
    assert 1 <= dark.sum() <= 12  # 4 to 48 degrees of shadow


def test_generate_dataset_writes_the_manifest_layout(tmp_path):
    info = generate_dataset(tmp_path / "ph", cases=2, frames_per_case=3, seed=1, config=SMALL, disjoint_tasks=True)
    rows = list(csv.DictReader(open(tmp_path / "ph" / "manifest.csv")))
    assert [r["case_id"] for r in rows] == ["phantom_000"] * 3 + ["phantom_001"] * 3
    assert [bool(r["calcium_mask"]) for r in rows[:3]] == [True, False, True]
    assert [bool(r["wall_lumen_mask"]) for r in rows[:3]] == [False, True, False]
    assert all(float(r["pixel_spacing_mm"]) == 0.05 for r in rows)
    assert (tmp_path / "ph" / rows[0]["image"]).is_file()
    assert info["seed"] == 1 and set(info["cases"]) == {"phantom_000", "phantom_001"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_single_task_and_existing_output(tmp_path):
    generate_dataset(tmp_path / "ca", cases=1, frames_per_case=2, config=SMALL, task="calcium")
    rows = list(csv.DictReader(open(tmp_path / "ca" / "manifest.csv")))
    assert all(r["calcium_mask"] and not r["wall_lumen_mask"] for r in rows)
    with pytest.raises(InputError, match="already exists"):
        generate_dataset(tmp_path / "ca", cases=1, frames_per_case=2, config=SMALL)
    with pytest.raises(InputError, match="unknown task"):
        generate_dataset(tmp_path / "x", cases=1, frames_per_case=2, config=SMALL, task="lumen")


def test_config_file_typos_are_one_line_errors(tmp_path):
    from ivus_tf.core.config import load_yaml

    path = tmp_path / "phantom.yaml"
    path.write_text("calcium_dbb: [9, 12]\n")
    with pytest.raises(InputError, match="unknown key 'calcium_dbb' .*did you mean 'calcium_db'"):
        load_yaml(PhantomConfig, path)
    path.write_text("guidewire_probability: 1.5\n")
    with pytest.raises(InputError, match="guidewire_probability must be within"):
        load_yaml(PhantomConfig, path)
    path.write_text("calcium_db: [14, 9]\n")
    with pytest.raises(InputError, match="low > high"):
        load_yaml(PhantomConfig, path)


def test_benchmark_preset_is_frozen():
    """Accuracy numbers are quoted on this preset: changing it silently would invalidate them."""
    bench = dataclasses.asdict(PRESETS["benchmark"])
    assert bench["image_size"] == 500 and bench["pixel_spacing_mm"] == 0.02
    assert bench["calcium_db"] == (9.0, 13.0) and bench["fibrous_db"] == (5.0, 9.0)
    assert bench["noise_db"] == (-31.0, -25.0) and bench["lateral_psf_sigma_mm"] == (0.07, 0.13)
    assert bench["guidewire_probability"] == 1.0 and bench["side_branches_per_10mm"] == 0.8
    assert bench["fibrous_per_frame"] == 1.2 and bench["attenuated_plaque_probability"] == 0.25


def test_cli_bad_preset_is_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_builder", "phantom", "--out", str(tmp_path / "x"), "--preset", "hard"],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:") and "hard" in result.stderr
    assert not (tmp_path / "x").exists()


def test_scan_conversion_puts_the_catheter_at_the_centre():
    x_mm, y_mm = acoustics.pixel_grid_mm(5, 1.0)
    assert x_mm[2, 2] == 0 and y_mm[2, 2] == 0 and x_mm[2, 4] == 2 and y_mm[4, 2] == 2


def test_calcium_arcs_span_spots_to_rings():
    from tfrecords_builder.phantom import anatomy

    arcs = []
    for case_index in range(40):
        case = anatomy.sample_case(PRESETS["default"], np.random.default_rng([0, case_index]), 8)
        for i in range(8):
            anat = anatomy.frame_anatomy(case, case.length_mm * i / 7, np.random.default_rng([0, case_index, i]))
            if anatomy.CALCIUM in anat.deposits:
                arcs.append(360 * np.mean(anat.deposits[anatomy.CALCIUM][1] > 0.02))
    arcs = np.array(arcs)
    assert arcs.min() < 45 and arcs.max() > 300  # spots to (near) full rings
    assert 0.25 < len(arcs) / 320 < 0.85  # calcium in a fair share of frames, not all
