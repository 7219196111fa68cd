"""ivus_tf.core: the vocabulary and its validators, atomic writes, the output-folder guard, the file lock."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from ivus_tf.core import atomic, vocab
from ivus_tf.core.errors import InputError

# ------------------------------------------------------------------------------------------------- vocabulary

def test_label_values_are_the_class_indices():
    assert vocab.TASKS == ("calcium", "wall_lumen")
    assert vocab.NUM_CLASSES == {"calcium": 2, "wall_lumen": 3}
    assert (vocab.BACKGROUND, vocab.CALCIFIED, vocab.LUMEN, vocab.VESSEL_WALL) == (0, 1, 1, 2)
    assert vocab.WALL_LUMEN_VALUES == (0, 1, 2)


@pytest.mark.parametrize("tasks, problem", [
    (("calcium", "plaque"), "here: unknown task(s) 'plaque'; valid: calcium, wall_lumen"),
    ((), "here: tasks is empty"),
    (("calcium", "calcium"), "here: tasks ['calcium', 'calcium'] lists a task twice"),
    ("calcium", "here: tasks must be a list of task names"),
    (None, "here: tasks must be a list of task names"),
])
def test_check_tasks_names_the_problem(tasks, problem):
    with pytest.raises(InputError) as error:
        vocab.check_tasks(tasks, "here")
    assert str(error.value).startswith(problem)


def test_check_tasks_keeps_order_and_check_task_names_the_place():
    assert vocab.check_tasks(["wall_lumen", "calcium"]) == ("wall_lumen", "calcium")
    assert vocab.check_task("calcium") == "calcium"
    with pytest.raises(ValueError, match=r"^case 'a': unknown task 'lumen'; valid: calcium, wall_lumen$"):
        vocab.check_task("lumen", "case 'a'")


def test_wall_lumen_labels_accept_whole_values_0_1_2_only():
    labels = np.array([[0, 1], [2, 1]])
    for dtype in (np.uint8, np.int64, np.float32):
        assert vocab.check_wall_lumen_labels(labels.astype(dtype)) is not None
    bad = [(np.array([[0, 3]]), "m has values 3; expected 0 background, 1 lumen, 2 vessel wall"),
           (np.array([[0.5, 1.0]]), "m has values 0.5;"),
           (np.array([[0, -1, 7, 3]]), "m has values -1, 3, 7;"),
           (np.arange(20).reshape(4, 5), "m has values 3, 4, 5, 6, 7, 8, 9, 10, ... (17 distinct)"),
           (np.zeros((2, 2), bool), "m must be an integer label map"),
           (np.zeros((2, 2, 1), np.uint8), "m must be a 2-D label map, got shape (2, 2, 1)"),
           (np.array([[0, math.nan]]), "m has values nan;")]
    for array, problem in bad:
        with pytest.raises(InputError) as error:
            vocab.check_wall_lumen_labels(array, "m")
        assert str(error.value).startswith(problem), (array, str(error.value))


def test_measurements_and_metrics_use_the_one_label_map_rule():
    from ivus_tf.measurements import frame_measurements, lumen_area_mm2
    from ivus_tf.metrics import wall_lumen_metrics

    labels = np.array([[0, 1], [2, 3]], np.uint8)  # 3 is not a wall-lumen label: refused everywhere now
    for call in (lambda: lumen_area_mm2(labels, 1.0), lambda: frame_measurements(None, labels, 1.0),
                 lambda: wall_lumen_metrics(labels, labels, 1.0)):
        with pytest.raises(InputError, match="has values 3; expected 0 background, 1 lumen, 2 vessel wall"):
            call()
    assert lumen_area_mm2(labels.astype(np.float64).clip(0, 2), 0.5) == 0.25  # whole floats are label maps


# ------------------------------------------------------------------------------------------------ atomic I/O

def test_atomic_write_replaces_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic.atomic_write_text(path, "one")
    with pytest.raises(RuntimeError), atomic.atomic_file(path) as tmp:
        tmp.write_text("half")
        assert tmp.name.endswith("-a.txt") and tmp.parent == path.parent  # the suffix Keras reads stays
        raise RuntimeError("killed")
    assert path.read_text() == "one" and sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]
    atomic.atomic_write_bytes(path, b"two", durable=True)
    assert path.read_bytes() == b"two"


def test_json_is_strict_nan_as_null(tmp_path):
    value = {"a": math.nan, "b": [np.float32(0.5), math.inf, (1, 2)], 3: np.int64(4), "c": np.array([1.5, np.nan])}
    path = atomic.atomic_write_json(tmp_path / "x.json", value)
    assert json.loads(path.read_text()) == {"a": None, "b": [0.5, None, [1, 2]], "3": 4, "c": [1.5, None]}
    assert "NaN" not in path.read_text()


def test_output_dir_guard(tmp_path):
    out = tmp_path / "out"
    atomic.check_output_dir(out, False, "index.json", "records folder")  # absent: fine
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match=r"out: already exists; pass --overwrite to replace it"):
        atomic.check_output_dir(out, False, "index.json", "records folder")
    with pytest.raises(InputError, match=r"out: not empty and not a records folder \(no index.json\); refusing"):
        atomic.check_output_dir(out, True, "index.json", "records folder")
    (out / "index.json").write_text("{}")
    atomic.check_output_dir(out, True, "index.json", "records folder")
    with pytest.raises(InputError, match=r"out: is or holds the input .*notes.txt; replacing it would delete"):
        atomic.check_output_dir(out, True, "index.json", "records folder", [out / "notes.txt"])
    with pytest.raises(InputError, match="is or holds the input"):
        atomic.check_output_dir(out, True, "index.json", "records folder", [out])


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic.atomic_output_dir(out) as tmp:
        (tmp / "f").write_text("x")
        raise RuntimeError("failed")
    assert list(tmp_path.iterdir()) == []
    with atomic.atomic_output_dir(out) as tmp:
        (tmp / "f").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "f").read_text() == "x"


def test_file_lock_excludes_another_process(tmp_path):
    lock = tmp_path / "l.lock"
    probe = ("import sys\nfrom ivus_tf.core.atomic import file_lock\n"
             "with file_lock(sys.argv[1], blocking=False) as held:\n    print(held)\n")
    with atomic.file_lock(lock) as held:
        assert held
        other = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True, check=True)
        assert other.stdout.strip() == "False"
    other = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "True"
