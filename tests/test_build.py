"""`build`: manifest -> records folder -> `iterate_frames` gives back the same frames; bad files fail atomically."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import synthetic_frame
from ivus_tf.core.errors import InputError
from tfrecords_builder import cli
from tfrecords_builder.build import build_records
from tfrecords_builder.images import load_image, load_mask
from tfrecords_builder.manifest import write_manifest

# (case_id, frame_id, tasks, pixel_spacing_mm) in manifest order: cases interleaved, frame ids not sorted.
FRAMES = [
    ("p2", "10", ("calcium", "wall_lumen"), 0.02),
    ("p1", "b", ("calcium",), 0.026),
    ("p2", "2", ("wall_lumen",), 0.02),
    ("p1", "a", ("calcium", "wall_lumen"), 0.026),
    ("p2", "1", ("calcium",), 0.03),
]


def write_dataset(root: Path, frames=FRAMES, allow_unlabeled_rows=()) -> tuple[Path, dict]:
    """Write PNG images/masks and a manifest under `root`; return (manifest path, {(case, frame): frame dict})."""
    rows, expected = [], {}
    for seed, (case_id, frame_id, tasks, spacing) in enumerate(frames):
        frame = synthetic_frame(case_id, frame_id, tasks=tasks, seed=seed, pixel_spacing_mm=spacing)
        folder = root / "images" / case_id
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{frame_id}.png"), frame["image"])
        row = {"case_id": case_id, "frame_id": frame_id, "image": f"images/{case_id}/{frame_id}.png",
               "pixel_spacing_mm": spacing}
        if frame["calcium_mask"] is not None:
            cv2.imwrite(str(folder / f"{frame_id}_ca.png"), frame["calcium_mask"] * 255)
            row["calcium_mask"] = f"images/{case_id}/{frame_id}_ca.png"
        if frame["wall_lumen_mask"] is not None:
            cv2.imwrite(str(folder / f"{frame_id}_wl.png"), frame["wall_lumen_mask"])
            row["wall_lumen_mask"] = f"images/{case_id}/{frame_id}_wl.png"
        rows.append(row)
        expected[case_id, frame_id] = frame
    return write_manifest(root / "manifest.csv", rows), expected


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_round_trip_gives_back_exact_frames(tmp_path):
    from ivus_tf.data import iterate_frames

    manifest, expected = write_dataset(tmp_path / "data")
    index = build_records(manifest, tmp_path / "records")
    frames = list(iterate_frames(tmp_path / "records"))
    # cases sorted, frames in manifest order within a case
    assert [(f["case_id"], f["frame_id"]) for f in frames] == [
        ("p1", "b"), ("p1", "a"), ("p2", "10"), ("p2", "2"), ("p2", "1")]
    for frame in frames:
        want = expected[frame["case_id"], frame["frame_id"]]
        np.testing.assert_array_equal(frame["image"], want["image"])
        for task in ("calcium", "wall_lumen"):
            if want[f"{task}_mask"] is None:
                assert frame[f"{task}_mask"] is None
            else:
                np.testing.assert_array_equal(frame[f"{task}_mask"], want[f"{task}_mask"])
        assert frame["pixel_spacing_mm"] == pytest.approx(want["pixel_spacing_mm"], rel=1e-6)
    assert index["num_frames"] == 5


def test_index_contents(tmp_path):
    manifest, _ = write_dataset(tmp_path / "data")
    out = tmp_path / "records"
    index = build_records(manifest, out, shards_per_case=2)
    assert json.loads((out / "index.json").read_text()) == json.loads(json.dumps(index))
    assert index["source_manifest"] == os.path.abspath(manifest)
    assert index["source_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    p1, p2 = index["cases"]["p1"], index["cases"]["p2"]
    assert list(index["cases"]) == ["p1", "p2"]
    assert (p1["frames"], p1["tasks"], p1["task_frames"]) == (2, ["calcium", "wall_lumen"],
                                                               {"calcium": 2, "wall_lumen": 1})
    assert (p2["frames"], p2["task_frames"]) == (3, {"calcium": 2, "wall_lumen": 2})
    assert p1["pixel_spacing_mm"] == [0.026] and p2["pixel_spacing_mm"] == [0.02, 0.03]
    assert p2["image_size"] == [[64, 64]]
    assert [f["name"] for f in p2["files"]] == ["cases/p2-00000-of-00002.tfrecord", "cases/p2-00001-of-00002.tfrecord"]
    assert sum(f["frames"] for f in p2["files"]) == 3
    for case in index["cases"].values():
        for entry in case["files"]:
            assert entry["sha256"] == hashlib.sha256((out / entry["name"]).read_bytes()).hexdigest()
    assert sorted(os.listdir(out / "cases")) == [
        "p1-00000-of-00002.tfrecord", "p1-00001-of-00002.tfrecord",
        "p2-00000-of-00002.tfrecord", "p2-00001-of-00002.tfrecord"]
    assert leftovers(tmp_path) == []


def test_unlabeled_rows_need_the_flag(tmp_path):
    from ivus_tf.data import iterate_frames

    manifest, _ = write_dataset(tmp_path / "data", [("c1", "f0", (), 0.02), ("c1", "f1", ("calcium",), 0.02)])
    with pytest.raises(InputError, match="row 2: no calcium_mask and no wall_lumen_mask"):
        build_records(manifest, tmp_path / "records")
    index = build_records(manifest, tmp_path / "records", allow_unlabeled=True)
    assert index["cases"]["c1"]["task_frames"] == {"calcium": 1, "wall_lumen": 0}
    frames = list(iterate_frames(tmp_path / "records"))
    assert frames[0]["calcium_mask"] is None and frames[0]["wall_lumen_mask"] is None


# ---------------------------------------------------------------- image formats


GRAY = np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8)


def test_image_formats(tmp_path):
    gray16 = (GRAY.astype(np.uint16) * 257 + np.where(GRAY < 255, 100, 0)).astype(np.uint16)  # 257k+100 -> k
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    cv2.imwrite(str(tmp_path / "g16.tif"), gray16)
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png"), GRAY)
    np.testing.assert_array_equal(load_image(tmp_path / "g16.tif"), GRAY)
    cv2.imwrite(str(tmp_path / "g8.tif"), GRAY)
    np.testing.assert_array_equal(load_image(tmp_path / "g8.tif"), GRAY)
    ramp = np.array([[0, 128, 129, 257, 32767, 32768, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "ramp.png"), ramp)
    np.testing.assert_array_equal(load_image(tmp_path / "ramp.png"), [[0, 0, 1, 1, 127, 128, 255]])

    bgr = np.dstack([GRAY, 255 - GRAY, GRAY // 2])
    cv2.imwrite(str(tmp_path / "rgb.png"), bgr)
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([bgr, np.full_like(GRAY, 9)]))
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "g.bmp"), GRAY)
    np.testing.assert_array_equal(load_image(tmp_path / "g.bmp"), GRAY)
    cv2.imwrite(str(tmp_path / "g.jpg"), GRAY)
    jpeg = load_image(tmp_path / "g.jpg")
    assert jpeg.dtype == np.uint8 and jpeg.shape == (64, 64)
    np.testing.assert_array_equal(jpeg, cv2.imread(str(tmp_path / "g.jpg"), cv2.IMREAD_GRAYSCALE))
    os.rename(tmp_path / "g.jpg", tmp_path / "g.png")  # recognised by content, not by name
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), jpeg)


def test_mask_formats(tmp_path):
    calcium = (GRAY > 200).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "c16.png"), calcium.astype(np.uint16) * 65535)
    cv2.imwrite(str(tmp_path / "c.tif"), calcium * 7)
    cv2.imwrite(str(tmp_path / "c.bmp"), calcium * 255)
    cv2.imwrite(str(tmp_path / "c_rgb.png"), np.dstack([calcium * 255] * 3))
    for name in ("c16.png", "c.tif", "c.bmp", "c_rgb.png"):
        np.testing.assert_array_equal(load_mask(tmp_path / name, "calcium", (64, 64)), calcium)
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((64, 64), np.uint8))
    np.testing.assert_array_equal(load_mask(tmp_path / "empty.png", "calcium", (64, 64)), 0)
    wall_lumen = (GRAY % 3).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "wl16.png"), wall_lumen.astype(np.uint16))
    np.testing.assert_array_equal(load_mask(tmp_path / "wl16.png", "wall_lumen", (64, 64)), wall_lumen)


def test_build_from_mixed_formats(tmp_path):
    from ivus_tf.data import iterate_frames

    data = tmp_path / "data"
    data.mkdir()
    cv2.imwrite(str(data / "a.tif"), GRAY.astype(np.uint16) * 257)
    cv2.imwrite(str(data / "b.bmp"), np.dstack([GRAY] * 3))
    cv2.imwrite(str(data / "ca.tif"), (GRAY > 100).astype(np.uint8) * 255)
    manifest = write_manifest(data / "manifest.csv", [
        {"case_id": "c", "frame_id": "0", "image": "a.tif", "calcium_mask": "ca.tif", "pixel_spacing_mm": 0.02},
        {"case_id": "c", "frame_id": "1", "image": "b.bmp", "calcium_mask": "ca.tif", "pixel_spacing_mm": 0.02},
    ])
    build_records(manifest, tmp_path / "records")
    for frame in iterate_frames(tmp_path / "records"):
        np.testing.assert_array_equal(frame["image"], GRAY)
        np.testing.assert_array_equal(frame["calcium_mask"], GRAY > 100)


# ---------------------------------------------------------------- bad files, atomic failure


def _truncated(ext: str, keep: float):
    def write(path: Path):
        cv2.imwrite(str(path.with_suffix(ext)), GRAY)
        data = path.with_suffix(ext).read_bytes()
        path.with_suffix(ext).unlink()
        path.write_bytes(data[: int(len(data) * keep)])
    return write


def _save(array: np.ndarray, ext: str = ".png"):
    def write(path: Path):
        cv2.imwrite(str(path.with_suffix(ext)), array)
        os.replace(path.with_suffix(ext), path)
    return write


def _corrupt_png(path: Path):
    cv2.imwrite(str(path), GRAY)
    data = bytearray(path.read_bytes())
    data[60:200] = bytes(140)  # complete file with IEND, garbage inside IDAT
    path.write_bytes(bytes(data))


calcium = (GRAY > 200).astype(np.uint8)
# name -> (which file of the last frame to replace, writer of the bad file, message fragments)
BAD_FILES = {
    "truncated_png": ("image", _truncated(".png", 0.6), ["truncated PNG (no IEND chunk"]),
    "truncated_png_tail": ("image", _truncated(".png", 0.999), ["truncated PNG"]),
    "truncated_jpeg": ("image", _truncated(".jpg", 0.6), ["truncated JPEG (no end-of-image marker)"]),
    "truncated_bmp": ("image", _truncated(".bmp", 0.6), ["truncated BMP"]),
    "truncated_tiff": ("image", _truncated(".tif", 0.5), ["corrupt or unsupported TIFF file"]),
    "corrupt_png": ("image", _corrupt_png, ["corrupt or unsupported PNG file"]),
    "empty_file": ("image", lambda p: p.write_bytes(b""), ["empty file"]),
    "text_file": ("image", lambda p: p.write_text("not an image"), ["not a PNG, TIFF, BMP or JPEG file"]),
    "float_tiff": ("image", _save(GRAY.astype(np.float32), ".tif"), ["pixel type float32 is not supported"]),
    "mask_size": ("calcium_mask", _save(np.zeros((32, 48), np.uint8)),
                  ["calcium mask is 48x32 (WxH) but its image is 64x64"]),
    "calcium_label_map": ("calcium_mask", _save(calcium * 2 + (GRAY < 10)),
                          ["calcium mask is not binary: nonzero values 1, 2"]),
    "calcium_jpeg": ("calcium_mask", _save(calcium * 255, ".jpg"), ["calcium mask is a JPEG; JPEG is lossy"]),
    "calcium_colour": ("calcium_mask", _save(np.dstack([calcium * 255, calcium * 0, calcium * 255])),
                       ["calcium mask is a colour image whose channels differ"]),
    "wall_lumen_values": ("wall_lumen_mask", _save((GRAY % 3).astype(np.uint8) * 127),
                          ["wall_lumen mask has values 127, 254; expected 0 background, 1 lumen, 2 vessel wall"]),
    "wall_lumen_jpeg": ("wall_lumen_mask", _save((GRAY % 3).astype(np.uint8), ".jpg"), ["wall_lumen mask is a JPEG"]),
    "wall_lumen_size": ("wall_lumen_mask", _save(np.zeros((64, 65), np.uint8)),
                        ["wall_lumen mask is 65x64 (WxH) but its image is 64x64"]),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_in_last_case_leaves_nothing(tmp_path, capfd, name):
    column, write_bad, fragments = BAD_FILES[name]
    frames = FRAMES + [("p3", "0", ("calcium", "wall_lumen"), 0.02), ("p3", "1", ("calcium", "wall_lumen"), 0.02)]
    manifest, _ = write_dataset(tmp_path / "data", frames)
    suffix = {"image": "", "calcium_mask": "_ca", "wall_lumen_mask": "_wl"}[column]
    bad = tmp_path / "data" / "images" / "p3" / f"1{suffix}.png"
    write_bad(bad)
    capfd.readouterr()
    with pytest.raises(InputError) as caught:
        build_records(manifest, tmp_path / "records", shards_per_case=2)
    message = str(caught.value)
    assert message.startswith(f"{manifest} row 8: {bad}: ")
    for fragment in fragments:
        assert fragment in message
    assert sorted(os.listdir(tmp_path)) == ["data"]  # neither records nor .records.tmp-*
    assert "error" not in capfd.readouterr().err.lower()  # decoder chatter is silenced


# ---------------------------------------------------------------- output folder


def test_existing_output_folder(tmp_path):
    manifest, _ = write_dataset(tmp_path / "data")
    out = tmp_path / "records"
    build_records(manifest, out)
    (out / "stale.txt").write_text("old")
    with pytest.raises(InputError, match=r"records: already exists; pass --overwrite to replace it"):
        build_records(manifest, out)
    build_records(manifest, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "index.json").is_file()
    assert leftovers(tmp_path) == []

    not_records = tmp_path / "notes"
    not_records.mkdir()
    (not_records / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match=r"notes: not empty and not a records folder \(no index.json\)"):
        build_records(manifest, not_records, overwrite=True)
    assert (not_records / "keep.txt").read_text() == "precious"

    (tmp_path / "data" / "index.json").write_text("{}")
    with pytest.raises(InputError, match=r"data: is or holds the input .*manifest.csv; replacing it would delete"):
        build_records(manifest, tmp_path / "data", overwrite=True)
    assert manifest.is_file()
    with pytest.raises(InputError, match="shards_per_case must be >= 1"):
        build_records(manifest, tmp_path / "other", shards_per_case=0)


# ---------------------------------------------------------------- command line


def test_cli_build_success(tmp_path, capsys):
    from ivus_tf.data import iterate_frames

    manifest, _ = write_dataset(tmp_path / "data")
    out = tmp_path / "records"
    status = cli.main(["build", "--manifest", str(manifest), "--out", str(out), "--shards-per-case", "2"])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.out.splitlines() == [
        f"wrote 2 cases, 5 frames to {out}",
        "frames per task: calcium 4, wall_lumen 3",
    ]
    assert len(list(iterate_frames(out))) == 5
    assert cli.main(["build", "--manifest", str(manifest), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {out}: already exists; pass --overwrite to replace it\n"
    with pytest.raises(SystemExit) as caught:
        cli.main(["build", "--manifest", str(manifest), "--out", str(out), "--shards-per-case", "0"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


def _nan_spacing_in_row_4(manifest: Path) -> str:
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",nan"
    manifest.write_text("\n".join(lines) + "\n")
    return f"{manifest} row 4: pixel_spacing_mm 'nan' must be a finite number of mm per pixel"


def _corrupt_image_in_last_row(manifest: Path) -> str:
    bad = manifest.parent / "images" / "p2" / "1.png"  # last case, written after p1 imported TensorFlow
    _corrupt_png(bad)
    return f"{manifest} row 6: {bad}: corrupt or unsupported PNG file"


@pytest.mark.parametrize("spoil", [_nan_spacing_in_row_4, _corrupt_image_in_last_row])
def test_cli_bad_manifest_in_subprocess(tmp_path, spoil):
    """One `error:` line on stderr: no TensorFlow start-up chatter, no libpng warnings, no traceback.

    The corrupt image sits in the last case, so TensorFlow has been imported (to write the first case) and
    libpng has choked on the file by the time the error is printed.
    """
    manifest, _ = write_dataset(tmp_path / "data")
    expected = spoil(manifest)
    out = tmp_path / "records"
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONUNBUFFERED"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "tfrecords_builder", "build", "--manifest", str(manifest), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=300,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    *progress_lines, last = result.stderr.splitlines()
    assert last.startswith("error: ") and expected in last, result.stderr
    if spoil is _nan_spacing_in_row_4:  # fails before any frame is read: the one line is all there is
        assert progress_lines == []
    else:  # the non-terminal progress report of the frames before the bad one, nothing else
        assert all(re.fullmatch(r"build: \d/5 frames", line) for line in progress_lines), result.stderr
    assert not out.exists() and leftovers(tmp_path) == []
