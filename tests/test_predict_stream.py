"""Overlapped predict (`ivus_tf.predict_stream`): the same bytes as the sequential path, results in frame order,
bounded queues, and a writer failure that stops the run with one line and leaves no output folder."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.predict import main, run_predict
from ivus_tf.predict_stream import FrameStream
from ivus_tf.pullback_io import Frame
from predict_helpers import FakeModel, geometry_frame, write_image_folder

SECTORS = [None, (18, 28, 0, 90), (18, 28, 30, 200), (18, 28, 100, 40), (20, 30, 200, 330)]


def pullback_folder(tmp_path, count=11):
    images = [geometry_frame(calcium=SECTORS[i % len(SECTORS)], lumen_r=12 + i % 4)[0] for i in range(count)]
    return write_image_folder(tmp_path / "pb", images)


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "summary.json"}


def test_overlapped_outputs_are_byte_identical_to_sequential(tmp_path):
    folder = pullback_folder(tmp_path)
    outputs = {}
    for threads in (0, 3):
        out = tmp_path / f"out{threads}"
        summary = run_predict("unused", folder, out, pixel_spacing_mm=0.02, batch_size=4, model=FakeModel(),
                              io_threads=threads, pullback_speed_mm_s=0.5, frame_rate_hz=30, report=True,
                              show_summary=False)
        assert summary["io_threads"] == threads and summary["frames"] == 11
        outputs[threads] = files_of(out)
    sequential, overlapped = outputs[0], outputs[3]
    assert sorted(sequential) == sorted(overlapped)
    assert sum(name.startswith("masks/") for name in sequential) == 22
    assert sum(name.startswith("overlays/") for name in sequential) == 11
    for name in ("measurements.csv", *[n for n in sequential if n.startswith(("masks/", "overlays/"))]):
        assert sequential[name] == overlapped[name], name


@pytest.mark.parametrize("threads", [0, 2])
def test_writer_error_at_frame_k_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys, threads):
    import ivus_tf.predict as predict_module

    folder = pullback_folder(tmp_path, count=12)
    written = []
    real = predict_module._write_png

    def failing(path, array, params=()):
        if path.name.startswith("frame7"):
            raise OSError(28, "No space left on device")
        written.append(path.name)
        real(path, array, params)

    monkeypatch.setattr(predict_module, "_write_png", failing)
    before = threading.active_count()
    monkeypatch.setattr(predict_module, "load_model", lambda *args, **kwargs: FakeModel())
    status = run_cli(main, ["--model", "unused", "--input", str(folder), "--out", str(tmp_path / "out"),
                            "--pixel-spacing-mm", "0.02", "--batch-size", "3", "--io-threads", str(threads)])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("predict:")]
    assert status == 2 and len(errors) == 1, err
    assert errors[0] == (f"error: {folder / 'frame7.png'}: writing the outputs of frame frame7 failed: "
                         "[Errno 28] No space left on device")
    assert written  # it got going before frame 7
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    assert threading.active_count() == before  # the reader and the writers are gone


def test_results_in_frame_order_with_bounded_pending_work():
    frames = [Frame("c", str(i), str(i), np.full((4, 4), i % 256, np.uint8), 0.1, "") for i in range(60)]
    state = {"submitted": 0, "done": 0, "max_in_flight": 0}
    lock = threading.Lock()
    rng = random.Random(0)

    def infer(batch):
        with lock:
            state["submitted"] += len(batch)
        return [{"value": int(frame.image[0, 0])} for frame in batch]

    def work(frame, outputs):
        time.sleep(rng.random() * 0.004)  # writers finish out of order
        return outputs["value"] * 2

    got = []
    with FrameStream(frames, 5, infer, work, threads=4, max_pending=10) as stream:
        for frame, result in stream:
            got.append((frame.frame_id, result))
            state["done"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["submitted"] - state["done"])
    assert got == [(str(i), 2 * i) for i in range(60)]
    assert state["max_in_flight"] <= 10 + 5  # max_pending, plus the batch just handed out


def test_reader_error_is_raised_in_order_after_earlier_frames(tmp_path):
    def frames():
        for i in range(7):
            if i == 5:
                raise InputError("frame5.png: truncated PNG")
            yield Frame("c", str(i), str(i), np.zeros((4, 4), np.uint8), 0.1, "")

    seen = []
    with pytest.raises(InputError, match="frame5.png: truncated PNG"):
        with FrameStream(frames(), 2, lambda batch: [{}] * len(batch), lambda f, o: f.frame_id, threads=2) as stream:
            for frame, _ in stream:
                seen.append(frame.frame_id)
    assert seen == ["0", "1", "2", "3"]  # the batches before the failing one, in order
