"""Manifest reading: every cheap check fails up front, with one line naming the manifest row and the problem."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from tfrecords_builder.build import build_records
from tfrecords_builder.manifest import MANIFEST_COLUMNS, ManifestRow, read_manifest, write_manifest

HEADER = ",".join(MANIFEST_COLUMNS)


@pytest.fixture
def data_dir(tmp_path):
    """tmp_path/data with img/a.png, img/b.png, masks ca.png (calcium) and wl.png (wall_lumen), all 64x64."""
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    image = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    for name in ("a", "b"):
        cv2.imwrite(str(data / "img" / f"{name}.png"), image)
    cv2.imwrite(str(data / "img" / "ca.png"), (image > 128).astype(np.uint8) * 255)
    cv2.imwrite(str(data / "img" / "wl.png"), (image % 3).astype(np.uint8))
    return data


def write_text(data_dir, *lines: str, name: str = "manifest.csv"):
    path = data_dir / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_manifest_rows(data_dir):
    path = write_text(
        data_dir,
        HEADER + ",notes",
        "c1,f0,img/a.png,img/ca.png,,0.02,first frame",
        "",  # blank lines are skipped but still count for row numbers
        "c1,f1,img/b.png,,img/wl.png,2.5e-2,",
        f"c0,0,{data_dir / 'img' / 'a.png'},img/ca.png,img/wl.png,1,",
    )
    rows = read_manifest(path)
    assert rows == [
        ManifestRow("c1", "f0", data_dir / "img/a.png", data_dir / "img/ca.png", None, 0.02, 2),
        ManifestRow("c1", "f1", data_dir / "img/b.png", None, data_dir / "img/wl.png", 0.025, 4),
        ManifestRow("c0", "0", data_dir / "img/a.png", data_dir / "img/ca.png", data_dir / "img/wl.png", 1.0, 5),
    ]
    assert all(row.image.is_absolute() for row in rows)
    assert rows[0].mask("calcium") == rows[0].calcium_mask and rows[0].mask("wall_lumen") is None


def test_read_manifest_relative_to_manifest_folder_and_bom(data_dir, monkeypatch):
    path = data_dir / "manifest.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\nc1,f0,img/a.png,img/ca.png,,0.02\r\n").encode("utf-8"))
    monkeypatch.chdir(data_dir.parent)
    rows = read_manifest("data/manifest.csv")
    assert rows[0].image == data_dir / "img" / "a.png"


def test_write_manifest_round_trip(data_dir):
    path = write_manifest(data_dir / "m.csv", [
        {"case_id": "c1", "frame_id": "f0", "image": "img/a.png", "calcium_mask": "img/ca.png",
         "wall_lumen_mask": None, "pixel_spacing_mm": 0.02},
    ])
    (row,) = read_manifest(path)
    assert (row.case_id, row.frame_id, row.wall_lumen_mask, row.pixel_spacing_mm) == ("c1", "f0", None, 0.02)


def test_allow_unlabeled(data_dir):
    path = write_text(data_dir, HEADER, "c1,f0,img/a.png,,,0.02")
    with pytest.raises(InputError, match="row 2: no calcium_mask and no wall_lumen_mask"):
        read_manifest(path)
    (row,) = read_manifest(path, allow_unlabeled=True)
    assert row.calcium_mask is None and row.wall_lumen_mask is None


GOOD = "c1,f0,img/a.png,img/ca.png,img/wl.png,0.02"

# (manifest lines after the header, expected fragments of the message); {m} is the manifest path.
BAD_ROWS = {
    "spacing_empty": ([GOOD, "c1,f1,img/a.png,img/ca.png,,"], ["{m} row 3: pixel_spacing_mm is empty"]),
    "spacing_zero": ([GOOD, "c1,f1,img/a.png,img/ca.png,,0"], ["{m} row 3: pixel_spacing_mm '0' must be"]),
    "spacing_negative": ([GOOD, "c1,f1,img/a.png,img/ca.png,,-0.02"], ["row 3: pixel_spacing_mm '-0.02'"]),
    "spacing_nan": ([GOOD, "c1,f1,img/a.png,img/ca.png,,nan"], ["row 3: pixel_spacing_mm 'nan' must be a finite"]),
    "spacing_inf": ([GOOD, "c1,f1,img/a.png,img/ca.png,,inf"], ["row 3: pixel_spacing_mm 'inf'"]),
    "spacing_decimal_comma": ([GOOD, "c1,f1,img/a.png,img/ca.png,,0,02"], ["row 3: 7 fields but the header has 6"]),
    "spacing_word": ([GOOD, "c1,f1,img/a.png,img/ca.png,,abc"], ["row 3: pixel_spacing_mm 'abc' must be"]),
    "case_empty": ([",f0,img/a.png,img/ca.png,,0.02"], ["{m} row 2: case_id is empty"]),
    "case_dotdot": (["../c1,f0,img/a.png,img/ca.png,,0.02"], ["row 2: case_id '../c1' is not a safe file name"]),
    "case_inner_dotdot": (["c..1,f0,img/a.png,img/ca.png,,0.02"], ["row 2: case_id 'c..1' is not a safe"]),
    "case_slash": (["a/b,f0,img/a.png,img/ca.png,,0.02"], ["row 2: case_id 'a/b' is not a safe file name"]),
    "case_backslash": (["a\\b,f0,img/a.png,img/ca.png,,0.02"], ["row 2: case_id 'a\\\\b' is not a safe"]),
    "case_leading_dot": ([".c1,f0,img/a.png,img/ca.png,,0.02"], ["row 2: case_id '.c1' is not a safe"]),
    "case_space": (["c 1,f0,img/a.png,img/ca.png,,0.02"], ["row 2: case_id 'c 1' is not a safe"]),
    "case_too_long": (["c" * 101 + ",f0,img/a.png,img/ca.png,,0.02"], ["row 2: case_id is 101 characters long"]),
    "case_letter_case": ([GOOD, "C1,f1,img/a.png,img/ca.png,,0.02"], ["row 3: case_id 'C1' differs from case_id 'c1'"]),
    "frame_empty": (["c1,,img/a.png,img/ca.png,,0.02"], ["row 2: frame_id is empty"]),
    "frame_slash": (["c1,x/y,img/a.png,img/ca.png,,0.02"], ["row 2: frame_id 'x/y' is not a safe file name"]),
    "frame_dotdot": (["c1,..,img/a.png,img/ca.png,,0.02"], ["row 2: frame_id '..' is not a safe"]),
    "duplicate": ([GOOD, "c0,f0,img/b.png,img/ca.png,,0.02", GOOD],
                  ["{m} rows 2 and 4: duplicate (case_id, frame_id) ('c1', 'f0')"]),
    "image_empty": ([GOOD, "c1,f1,,img/ca.png,,0.02"], ["{m} row 3: image path is empty"]),
    "image_missing": ([GOOD, "c1,f1,img/nope.png,img/ca.png,,0.02"], ["row 3: image 'img/nope.png' not found", "img"]),
    "image_is_folder": ([GOOD, "c1,f1,img,img/ca.png,,0.02"], ["row 3: image 'img' is not a file"]),
    "calcium_missing": ([GOOD, "c1,f1,img/a.png,img/no.png,,0.02"], ["row 3: calcium_mask 'img/no.png' not found"]),
    "wall_lumen_missing": ([GOOD, "c1,f1,img/a.png,,no.png,0.02"], ["row 3: wall_lumen_mask 'no.png' not found"]),
    "no_mask": ([GOOD, "c1,f1,img/a.png,,,0.02"], ["row 3: no calcium_mask and no wall_lumen_mask"]),
    "missing_file_in_last_row": ([GOOD] + [f"c{i},f0,img/a.png,img/ca.png,,0.02" for i in range(2, 9)]
                                 + ["c9,f0,img/a.png,img/gone.png,,0.02"], ["row 10: calcium_mask 'img/gone.png'"]),
}


@pytest.mark.parametrize("name", sorted(BAD_ROWS))
def test_bad_rows_fail_up_front_without_output(data_dir, tmp_path, name):
    lines, fragments = BAD_ROWS[name]
    manifest = write_text(data_dir, HEADER, *lines)
    out = tmp_path / "records"
    with pytest.raises(InputError) as caught:
        build_records(manifest, out)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment.format(m=manifest) in message
    assert os.listdir(tmp_path) == ["data"]  # no output folder, no temporary folder


@pytest.mark.parametrize("content, fragment", [
    ("", "empty manifest; expected a header row case_id,frame_id"),
    ("\n\n", "empty manifest"),
    (HEADER + "\n", "manifest has a header but no data rows"),
    ("case_id,frame_id,image,pixel_spacing_mm\nc1,f0,img/a.png,0.02\n",
     "missing column(s) calcium_mask, wall_lumen_mask"),
    ("case_id;frame_id;image\n", "missing column(s) case_id, frame_id, image, calcium_mask"),
    (HEADER + ",image\nc1,f0,img/a.png,,,0.02,x\n", "column(s) image appear more than once"),
    (HEADER + '\nc1,f0,img/a.png,,,0.02\n"c1,f1,img/a.png\n', "row 3: not valid CSV (unexpected end of data)"),
    (HEADER + '\nc1,f0,"img/a.png"x,,,0.02\n', "row 2: not valid CSV"),
])
def test_bad_manifest_files(data_dir, tmp_path, content, fragment):
    manifest = data_dir / "manifest.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        build_records(manifest, tmp_path / "records")
    assert str(caught.value).startswith(f"{manifest}")
    assert fragment in str(caught.value)
    assert os.listdir(tmp_path) == ["data"]


def test_missing_unreadable_and_binary_manifests(data_dir, tmp_path):
    with pytest.raises(InputError, match=r"nope\.csv: manifest not found"):
        build_records(data_dir / "nope.csv", tmp_path / "records")
    with pytest.raises(InputError, match=r"img: manifest is not a file"):
        read_manifest(data_dir / "img")
    binary = data_dir / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match=r"binary\.csv: manifest is not UTF-8 text"):
        read_manifest(binary)
    if os.name == "posix" and os.geteuid() != 0:
        locked = write_text(data_dir, HEADER, GOOD, name="locked.csv")
        locked.chmod(0)
        with pytest.raises(InputError, match=r"locked\.csv: cannot read manifest \(Permission denied\)"):
            read_manifest(locked)
    assert os.listdir(tmp_path) == ["data"]
