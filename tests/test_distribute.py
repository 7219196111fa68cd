"""tf.distribute: MirroredStrategy on two logical CPU devices and MultiWorkerMirroredStrategy with two local worker
processes give what single-device training gives (ivus_tf/training/distribute.py).

Each distributed run is its own process (tests/distribute_worker.py): logical devices must be configured before
TensorFlow starts, and a multi-worker cluster is one process per worker. The tiny runs are tests/test_train_run.py's
(U-Net Res width 1/16, multitask, 2 epochs of 1 step of 4 frames, eager: the second epoch starts from a
distributed update), with the wide_bottom U-Net, whose tiny gradient float rounding does not swamp (see
`tiny_config`); the one-step gradient check uses the default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_ports, synthetic_frame
from ivus_tf.core.errors import InputError
from ivus_tf.training.config import TrainConfig, config_differences, load_config
from ivus_tf.training.distribute import is_chief, make_strategy, worker_run_dir

WORKER = Path(__file__).with_name("distribute_worker.py")
ROOT = Path(__file__).parents[1]
LOSSES = ("loss", "calcium_loss", "wall_lumen_loss", "val_loss", "val_calcium_loss", "val_wall_lumen_loss")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """6 pullbacks of 4 frames of 40x44 pixels, calcium and wall-lumen labels on alternate frames."""
    from tfrecords_builder.writer import write_records

    frames = {f"case{i}": [synthetic_frame(f"case{i}", f"{j:02d}", (40, 44),
                                           ("calcium",) if j % 2 == 0 else ("wall_lumen",), seed=10 * i + j,
                                           pixel_spacing_mm=0.03) for j in range(4)] for i in range(6)}
    out = tmp_path_factory.mktemp("distribute") / "records"
    write_records(frames, out)
    return out


def start(args, tf_config: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "checkpoints" / "multitask" / "state.json").read_text())["history"]


def assert_same_training(run: Path, reference: Path) -> None:
    """Every epoch's training and validation losses within float tolerance of the reference run.

    Weights are not compared after several Adam steps: Adam turns float noise in near-zero gradient components
    into full-size steps of either sign; the gradient itself is compared in test_mirrored_step_equals_single_device.
    Dice values are not compared: a near-random tiny model flips single pixels of a few-pixel calcium mask."""
    got, want = history(run), history(reference)
    assert len(got) == len(want) == 2
    for epoch_got, epoch_want in zip(got, want):
        for key in LOSSES:
            assert epoch_got[key] == pytest.approx(epoch_want[key], rel=2e-3, abs=1e-5), (key, epoch_got["epoch"])


@pytest.fixture(scope="module")
def single_device_run(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    finish(start([records, out, "none", 2]))
    return out


@pytest.mark.slow
def test_mirrored_step_equals_single_device(records, tmp_path):
    """One SGD step of the multitask model on one global batch: the update under MirroredStrategy over 2 replicas
    equals the single-device update (without the loss's all-reduce it is off by half the update itself; with
    Keras's own synchronized batch-norm variance by 3 %). The Dice metrics the phases select on, pooled and per
    frame, are the same under the strategy as on one device."""
    out = tmp_path / "step.json"
    finish(start([records, out, "step", 2]))
    result = json.loads(out.read_text())
    assert result["max_update"] > 0.01
    assert result["max_update_difference"] < 1e-3 * result["max_update"]  # float rounding (measured 2e-5)
    single, distributed = result["metrics"]
    dice = [key for key in single if key.endswith("dice")]
    assert {"calcium_frame_dice", "wall_lumen_frame_dice", "calcium_dice", "wall_lumen_dice"} <= set(dice)
    assert 0 < single["wall_lumen_frame_dice"] < 1
    for key in dice:
        assert distributed[key] == pytest.approx(single[key], abs=1e-6), key


@pytest.mark.slow
def test_mirrored_training_matches_single_device(records, single_device_run, tmp_path):
    out = tmp_path / "run"
    output = finish(start([records, out, "mirrored", 2]))
    assert "MirroredStrategy over 2 replicas, global batch 4" in output
    assert_same_training(out, single_device_run)
    assert (out / "done.json").is_file() and (out / "metrics.json").is_file()


@pytest.mark.slow
def test_multiworker_training_matches_single_device(records, single_device_run, tmp_path):
    """Two worker processes on loopback ports train one run together (the keras#20585 workaround in use): the
    chief writes the run folder, worker 1 its own copy beside it, and both match single-device training. Restarted
    with copies at different points, both workers stop with one line instead of hanging."""
    out = tmp_path / "run"
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = [start([records, out, "multiworker"], {"cluster": cluster, "task": {"type": "worker", "index": i}})
               for i in range(2)]
    outputs = [finish(worker) for worker in workers]
    assert "MultiWorkerMirroredStrategy over 2 replicas" in outputs[0]
    copy = tmp_path / "run.worker-1"
    for run_dir in (out, copy):
        assert (run_dir / "done.json").is_file()
        assert_same_training(run_dir, single_device_run)
    assert history(out) == history(copy)  # the workers trained one model together

    # Worker 1's copy now looks unfinished while the chief's is finished: without the check the chief would return
    # at once and worker 1 would wait forever in its first collective; with it both stop with one line.
    (copy / "done.json").unlink()
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = [start([records, out, "multiworker"], {"cluster": cluster, "task": {"type": "worker", "index": i}})
               for i in range(2)]
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 2, output[-3000:]
        assert ("the workers' copies of this run are at different points (worker 0: [1, 2, 1]; worker 1: [0, 2, 1]"
                in output), output[-3000:]


def test_strategy_field_is_checked_and_is_not_part_of_the_run_identity():
    with pytest.raises(InputError, match="strategy 'mirorred' is unknown; valid: none, mirrored, multiworker"):
        load_config(None, {"strategy": "mirorred"})
    base, mirrored = TrainConfig(), TrainConfig(strategy="mirrored")
    assert base.fingerprint() == mirrored.fingerprint()  # same default run folder: resumable under a strategy
    assert config_differences(base, mirrored) == []
    assert config_differences(base, TrainConfig(width=0.5)) == ["width 1.0 -> 0.5"]


def test_multiworker_needs_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(InputError, match="strategy multiworker needs TF_CONFIG"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(InputError, match="task worker 3 is not in the cluster"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="TF_CONFIG is not valid JSON"):
        make_strategy("multiworker")
    assert make_strategy("none") is None


def test_only_the_chief_writes_the_run_folder(monkeypatch):
    cluster = {"worker": ["a:1", "b:1", "c:1"]}
    for index, expected in ((0, "/g/runs/x"), (2, "/g/runs/x.worker-2")):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert worker_run_dir("/g/runs/x", "multiworker") == expected
        assert worker_run_dir("/g/runs/x", "mirrored") == "/g/runs/x"
        assert is_chief() is (index == 0)
    monkeypatch.delenv("TF_CONFIG")
    assert worker_run_dir("/g/runs/x", "multiworker") == "/g/runs/x" and is_chief()


@pytest.mark.slow
def test_global_batch_must_split_evenly_over_the_replicas(records, tmp_path):
    """An odd global batch over 2 replicas: one line before anything trains, nothing written."""
    script = ("import sys, dataclasses; sys.argv[1:] = []\n"
              "from distribute_worker import tiny_config\n"
              "import tensorflow as tf\n"
              "cpu = tf.config.list_physical_devices('CPU')[0]\n"
              "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
              "from ivus_tf.core.errors import run_cli\n"
              "from ivus_tf.training.run import run_training\n"
              f"config = dataclasses.replace(tiny_config({str(records)!r}, {str(tmp_path / 'run')!r}, 'mirrored'),"
              " batch_size=3)\n"
              "raise SystemExit(run_cli(lambda _: run_training(config) and 0, []))\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{WORKER.parent}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: batch_size 3 is the global batch and must be a multiple of the 2 replicas" in result.stderr
    assert not (tmp_path / "run").exists()
