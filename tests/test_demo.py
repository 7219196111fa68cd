"""The main job's data half runs end to end and reuses what it already made."""

import json

import pytest

from ivus_tf.demo import main, run_demo

pytestmark = pytest.mark.slow  # renders a phantom and builds records, ~10 s


def test_demo_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(out, cases=5, frames_per_case=4, image_size=64, batch_size=4)
    assert (out / "phantom" / "manifest.csv").is_file() and (out / "records" / "index.json").is_file()
    assert (out / "train_batch.png").stat().st_size > 1000
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits["test_cases"]) == 1
    assert summary["image_shape"] == [4, 64, 64, 1]
    assert summary["calcium_frames"] > 0 and summary["wall_lumen_frames"] > 0
    assert 0 < summary["calcium_pixel_fraction"] < 0.2
    index_before = (out / "records" / "index.json").read_text()
    assert main(["--out", str(out), "--cases", "5", "--frames-per-case", "4", "--image-size", "64",
                 "--batch-size", "4"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "records" / "index.json").read_text() == index_before
