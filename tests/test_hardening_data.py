"""Issue 13, the data side: record checksums checked, corrupt JPEG data caught, pixel spacing bounded, file-system
errors of the builder as one line. Each test failed on main before its fix."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
from test_build import write_dataset

from ivus_tf.core.errors import InputError
from tfrecords_builder import cli
from tfrecords_builder.build import build_records
from tfrecords_builder.manifest import write_manifest


def corrupt_jpeg_bytes(seed: int = 0) -> bytes:
    """A JPEG whose entropy-coded data is damaged: OpenCV decodes it (wrong pixels) and libjpeg only warns."""
    image = np.random.default_rng(seed).normal(100, 30, (64, 64)).clip(0, 255).astype(np.uint8)
    data = bytearray(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    middle = len(data) // 2
    data[middle:middle + 40] = bytes(40)
    return bytes(data)


def unwritable_parent(tmp_path):
    """A folder this process cannot create anything in: chmod 0555 for a normal user; as root (chmod does not
    stop root) a path under /sys, where even root may not create folders."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if not os.path.isdir("/sys/fs"):
        pytest.skip("running as root without /sys: no way to make a folder unwritable without mounting")
    return __import__("pathlib").Path("/sys/ivus-tf-test-no-such-folder")


# ------------------------------------------------------------------------- 6: checksums of the record files

def test_index_records_sizes_and_a_truncated_file_is_named(tmp_path):
    from tfrecords_builder.index import read_index

    manifest, _ = write_dataset(tmp_path / "data")
    out = tmp_path / "records"
    index = build_records(manifest, out)
    entry = index["cases"]["p1"]["files"][0]
    assert entry["bytes"] == (out / entry["name"]).stat().st_size
    path = out / entry["name"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match=rf"{path}: {entry['bytes'] - 10} bytes but index.json says "
                                         rf"{entry['bytes']}; the file is truncated or was changed"):
        read_index(out)


def test_verify_records_hashes_once_and_names_a_corrupt_file(tmp_path, monkeypatch):
    from tfrecords_builder import index as index_module

    manifest, _ = write_dataset(tmp_path / "data")
    out = tmp_path / "records"
    index = build_records(manifest, out)
    cache = tmp_path / "cache"
    hashed = []
    real = index_module.sha256_file
    monkeypatch.setattr(index_module, "sha256_file", lambda path: hashed.append(path) or real(path))
    index_module.verify_records(out, index, cache)
    assert len(hashed) == 2  # one file per case
    index_module.verify_records(out, index, cache)
    assert len(hashed) == 2  # verified before, unchanged (size and modification time): not hashed again
    path = out / index["cases"]["p2"]["files"][0]["name"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"^{path}: sha256 differs from index.json; the file is corrupt or was "
                                         "changed"):
        index_module.verify_records(out, index, cache)


def test_verify_records_works_without_a_writable_cache(tmp_path):
    from tfrecords_builder.index import verify_records

    manifest, _ = write_dataset(tmp_path / "data")
    index = build_records(manifest, tmp_path / "records")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    verify_records(tmp_path / "records", index, blocker / "cache")  # the cache cannot be written: still checks


# ------------------------------------------------------------------------------------- 8: corrupt JPEG data

def test_build_refuses_corrupt_jpeg_naming_the_row(tmp_path):
    manifest, _ = write_dataset(tmp_path / "data")
    rows = manifest.read_text().splitlines()
    bad = tmp_path / "data" / "images" / "p1" / "b.jpg"
    bad.write_bytes(corrupt_jpeg_bytes())
    rows[2] = rows[2].replace("images/p1/b.png", "images/p1/b.jpg")
    assert "b.jpg" in rows[2]
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=rf"{manifest} row 3: {bad}: corrupt JPEG data \(libjpeg: Corrupt JPEG "
                                         "data"):
        build_records(manifest, tmp_path / "records")
    assert not (tmp_path / "records").exists()


def test_predict_input_warns_once_per_corrupt_jpeg_frame(tmp_path):
    from ivus_tf.pullback_io import Warnings, open_pullback

    folder = tmp_path / "frames"
    folder.mkdir()
    good = cv2.imencode(".jpg", np.full((64, 64), 90, np.uint8))[1].tobytes()
    for name, data in (("f0.jpg", good), ("f1.jpg", corrupt_jpeg_bytes(1)), ("f2.jpg", corrupt_jpeg_bytes(2))):
        (folder / name).write_bytes(data)
    stream = io.StringIO()
    frames = list(open_pullback(folder, 0.02, Warnings(stream)))
    assert len(frames) == 3
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, ("f1.jpg", "f2.jpg")):
        assert line.startswith(f"warning: {folder / name}: corrupt JPEG data (libjpeg: Corrupt JPEG data")
        assert line.endswith("predicted anyway")


# ------------------------------------------------------------------------------- 10: pixel spacing bounded

@pytest.mark.parametrize("spacing", ["1e-50", "1e39", "2"])
def test_manifest_pixel_spacing_outside_the_physical_range(tmp_path, spacing):
    from tfrecords_builder.manifest import read_manifest

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8), np.uint8))
    path = write_manifest(tmp_path / "m.csv", [{"case_id": "c", "frame_id": "1", "image": "a.png",
                                                "calcium_mask": "a.png", "pixel_spacing_mm": spacing}])
    with pytest.raises(InputError, match=rf"{path} row 2: pixel_spacing_mm '{spacing}' must be a finite number of "
                                         "mm per pixel between 0.001 and 1"):
        read_manifest(path)


# ------------------------------------------------------------------------- 7: file-system errors, one line

def test_build_into_an_unwritable_folder_is_one_line(tmp_path, capsys):
    manifest, _ = write_dataset(tmp_path / "data")
    parent = unwritable_parent(tmp_path)
    assert cli.main(["build", "--manifest", str(manifest), "--out", str(parent / "records")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {parent}") and err.count("\n") == 1 and "Traceback" not in err


def test_build_out_under_a_file_is_one_line(tmp_path, capsys):
    manifest, _ = write_dataset(tmp_path / "data")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["build", "--manifest", str(manifest), "--out", str(blocker / "records")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {blocker}") and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------------- minor

@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--pixel-spacing-mm", "1e-50")])
def test_phantom_refuses_zero_workers_and_a_spacing_outside_the_range(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_status:  # argparse exits with 2 after its one line
        cli.main(["phantom", "--out", str(tmp_path / "p"), "--cases", "1", "--frames-per-case", "1", flag, value])
    err = capsys.readouterr().err
    assert exit_status.value.code == 2
    assert err.startswith(f"error: python -m tfrecords_builder phantom: argument {flag}: ")
    assert err.count("\n") == 1 and not (tmp_path / "p").exists()
