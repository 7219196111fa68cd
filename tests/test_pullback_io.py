"""Tests of ivus_tf.pullback_io: folder, DICOM and manifest readers, spacing rules, bad input, streaming."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.pullback_io import Warnings, natural_key, open_pullback
from predict_helpers import write_dicom, write_image_folder
from tfrecords_builder.manifest import write_manifest

RNG = np.random.default_rng(0)


def noise(*shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def read_all(pullback):
    return [frame for frame in pullback]


# ---------------------------------------------------------------------------------------------------- folder

def test_folder_natural_order_ids_and_spacing(tmp_path):
    frames = [noise(20, 30) for _ in range(4)]
    folder = write_image_folder(tmp_path / "pb01", frames, names=["f10", "f2", "f1", "F3"])
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"junk")
    (folder / "sub").mkdir()
    pullback = open_pullback(folder, pixel_spacing_mm=0.02)
    assert (pullback.kind, pullback.frames, pullback.case_ids) == ("folder", 4, ["pb01"])
    got = read_all(pullback)
    assert [frame.frame_id for frame in got] == ["f1", "f2", "F3", "f10"]
    np.testing.assert_array_equal(got[3].image, frames[0])
    assert all(frame.pixel_spacing_mm == 0.02 and frame.case_id == "pb01" for frame in got)
    assert sorted(["a10", "a9", "A1b", "a1a"], key=natural_key) == ["a1a", "A1b", "a9", "a10"]


def test_folder_16_bit_and_colour_converted_with_one_warning(tmp_path):
    folder = tmp_path / "pb"
    folder.mkdir()
    gray = noise(16, 16)
    cv2.imwrite(str(folder / "0.png"), gray.astype(np.uint16) * 257)
    for i in (1, 2, 3):
        cv2.imwrite(str(folder / f"{i}.png"), np.dstack([gray] * 3))
    stream = io.StringIO()
    got = read_all(open_pullback(folder, 0.02, Warnings(stream)))
    for frame in got:
        np.testing.assert_array_equal(frame.image, gray)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "1.png" in lines[0] and "gray" in lines[0]


def test_folder_needs_spacing_frames_and_one_size(tmp_path):
    with pytest.raises(InputError, match="no frames in this folder"):
        open_pullback((tmp_path / "empty").mkdir() or tmp_path / "empty", 0.02)
    dicoms = tmp_path / "dicoms"
    dicoms.mkdir()
    (dicoms / "a.dcm").write_bytes(b"x")
    with pytest.raises(InputError, match="holds DICOM files"):
        open_pullback(dicoms, 0.02)
    folder = write_image_folder(tmp_path / "pb", [noise(20, 30), noise(20, 30), noise(21, 30), noise(20, 30)])
    with pytest.raises(InputError, match="carries no pixel spacing; pass --pixel-spacing-mm"):
        open_pullback(folder)
    # the size check reads headers only, before any frame is decoded, and names the first differing file
    with pytest.raises(InputError, match=r"frame2\.png: frame is 30x21 \(WxH\) but frame0\.png is 30x20"):
        open_pullback(folder, 0.02)
    with pytest.raises(InputError, match="finite number of mm per pixel"):
        open_pullback(folder, float("nan"))


def test_folder_duplicate_stems_and_corrupt_frame(tmp_path):
    folder = write_image_folder(tmp_path / "pb", [noise(8, 8)], names=["a"])
    cv2.imwrite(str(folder / "a.tif"), noise(8, 8))
    with pytest.raises(InputError, match="same frame name as a.png"):
        open_pullback(folder, 0.02)
    folder = write_image_folder(tmp_path / "pb2", [noise(8, 8), noise(8, 8)])
    data = (folder / "frame1.png").read_bytes()
    (folder / "frame1.png").write_bytes(data[: len(data) // 2])
    frames = iter(open_pullback(folder, 0.02))
    next(frames)
    with pytest.raises(InputError, match=r"frame1\.png: truncated PNG"):
        next(frames)


# ----------------------------------------------------------------------------------------------------- DICOM

def test_dicom_ultrasound_regions_in_cm_and_frame_rate(tmp_path):
    frames = noise(5, 24, 32)
    path = write_dicom(tmp_path / "run1.dcm", frames, region_delta_cm=(0.0026, 0.0026), frame_time_ms=40)
    pullback = open_pullback(path)
    assert pullback.kind == "dicom" and pullback.frames == 5 and pullback.case_ids == ["run1"]
    assert pullback.pixel_spacing_mm == pytest.approx(0.026)
    assert "SequenceOfUltrasoundRegions" in pullback.spacing_source
    assert pullback.frame_rate_hz == pytest.approx(25) and pullback.frame_rate_source == "DICOM FrameTime"
    got = read_all(pullback)
    assert [frame.frame_id for frame in got] == ["0000", "0001", "0002", "0003", "0004"]
    np.testing.assert_array_equal(np.stack([frame.image for frame in got]), frames)


def test_dicom_pixel_spacing_override_and_missing(tmp_path):
    frames = noise(2, 8, 8)
    path = write_dicom(tmp_path / "a.dcm", frames, pixel_spacing_mm=0.02)
    assert open_pullback(path).pixel_spacing_mm == pytest.approx(0.02)
    stream = io.StringIO()
    pullback = open_pullback(path, 0.03, Warnings(stream))
    assert pullback.pixel_spacing_mm == 0.03 and pullback.spacing_source == "--pixel-spacing-mm"
    assert "overrides the DICOM's 0.02 mm" in stream.getvalue()
    bare = write_dicom(tmp_path / "bare.dcm", frames)
    with pytest.raises(InputError, match="no pixel spacing in the DICOM file.*pass --pixel-spacing-mm"):
        open_pullback(bare)
    assert open_pullback(bare, 0.02).pixel_spacing_mm == 0.02
    in_mm_units = write_dicom(tmp_path / "units.dcm", frames, region_delta_cm=(0.002, 0.002), region_units=4)
    with pytest.raises(InputError, match="no pixel spacing"):
        open_pullback(in_mm_units)  # a region in seconds (4) is not a length
    anisotropic = write_dicom(tmp_path / "aniso.dcm", frames, pixel_spacing_mm=(0.02, 0.03))
    with pytest.raises(InputError, match="non-square pixels"):
        open_pullback(anisotropic)


def test_dicom_colour_monochrome1_16_bit_and_jpeg(tmp_path):
    rgb = noise(3, 12, 10, 3)
    stream = io.StringIO()
    got = read_all(open_pullback(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB", pixel_spacing_mm=0.02), None,
                                 Warnings(stream)))
    np.testing.assert_array_equal(got[2].image, cv2.cvtColor(rgb[2], cv2.COLOR_RGB2GRAY))
    assert stream.getvalue().count("warning:") == 1 and "RGB frames converted to gray" in stream.getvalue()
    gray = noise(2, 12, 10)
    inverted = read_all(open_pullback(write_dicom(tmp_path / "m1.dcm", gray, "MONOCHROME1", pixel_spacing_mm=0.02)))
    np.testing.assert_array_equal(inverted[0].image, 255 - gray[0])
    twelve = (gray.astype(np.int64) * 4095 // 255).astype(np.uint16)
    scaled = read_all(open_pullback(write_dicom(tmp_path / "b12.dcm", twelve, bits_stored=12, pixel_spacing_mm=0.02)))
    assert np.abs(scaled[1].image.astype(int) - gray[1]).max() <= 1
    smooth = np.stack([cv2.GaussianBlur(noise(32, 32), (0, 0), 3) for _ in range(3)])
    jpeg = read_all(open_pullback(write_dicom(tmp_path / "j.dcm", np.repeat(smooth[..., None], 3, axis=3),
                                              jpeg=True, pixel_spacing_mm=0.02), None, Warnings(io.StringIO())))
    assert len(jpeg) == 3 and np.abs(jpeg[1].image.astype(int) - smooth[1]).mean() < 3


def test_dicom_is_read_frame_by_frame(tmp_path):
    """Opening reads the header only; iterating holds about one frame of pixel data at a time (tracemalloc counts
    the bytes pydicom and numpy allocate)."""
    import tracemalloc

    frames = noise(200, 64, 64)  # 800 KB of pixel data
    path = write_dicom(tmp_path / "long.dcm", frames, pixel_spacing_mm=0.02)
    tracemalloc.start()
    try:
        pullback = open_pullback(path)
        opened = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        count = sum(int(frame.image[0, 0]) >= 0 for frame in pullback)
        iterated = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 200
    assert opened < 200_000 and iterated < 200_000, (opened, iterated)


def test_dicom_corrupt_truncated_and_not_dicom(tmp_path):
    random_bytes = tmp_path / "random.dcm"
    random_bytes.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(InputError, match=r"random\.dcm: not a DICOM file"):
        open_pullback(random_bytes)
    path = write_dicom(tmp_path / "t.dcm", noise(10, 64, 64), pixel_spacing_mm=0.02)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 64 * 64 * 4 - 100])  # cut into the 6th frame
    with pytest.raises(InputError, match=r"t\.dcm: truncated DICOM file: the pixel data holds 5 of 10 frames"):
        open_pullback(path)  # before any frame is decoded
    with pytest.raises(InputError, match="input not found"):
        open_pullback(tmp_path / "missing.dcm")
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), noise(4, 4))
    with pytest.raises(InputError, match="a single image; pass the folder"):
        open_pullback(image)


# -------------------------------------------------------------------------------------------------- manifest

def test_manifest_cases_spacing_and_sizes(tmp_path):
    rows = []
    for case, size, spacing in (("caseA", (16, 16), 0.02), ("caseB", (24, 20), 0.026)):
        for i in range(2):
            rel = f"img/{case}_{i}.png"
            (tmp_path / "img").mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / rel), noise(*size))
            rows.append({"case_id": case, "frame_id": f"{i:03d}", "image": rel, "pixel_spacing_mm": spacing})
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    pullback = open_pullback(manifest)
    assert pullback.kind == "manifest" and pullback.case_ids == ["caseA", "caseB"]
    got = read_all(pullback)
    assert [f.name for f in got] == ["caseA_000", "caseA_001", "caseB_000", "caseB_001"]
    assert [f.pixel_spacing_mm for f in got] == [0.02, 0.02, 0.026, 0.026]
    assert got[2].image.shape == (24, 20)
    stream = io.StringIO()
    assert {f.pixel_spacing_mm for f in open_pullback(manifest, 0.03, Warnings(stream))} == {0.03}
    assert "overrides the manifest" in stream.getvalue()
    cv2.imwrite(str(tmp_path / "img/caseB_1.png"), noise(30, 20))  # one case, two sizes
    with pytest.raises(InputError, match=r"caseB_1\.png: frame is 20x30 .*case 'caseB'"):
        open_pullback(manifest)
