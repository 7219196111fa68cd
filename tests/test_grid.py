"""The grid runner: expansion and ids, bad configs before any run, kills and restarts, shards, concurrent appends,
corrupt results, --devices workers, and the report on a grid's results.

Tiny U-Nets (width 1/16) on 32x32 inputs from 48x48 frames, 2 epochs of 2 steps, in eager mode (compiling a train
step costs ~20 s on 2 CPU cores, more than these runs take): about 5-10 s per run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import free_ports, synthetic_frame
from ivus_tf.core.errors import InputError
from ivus_tf.grid.__main__ import main as grid_main
from ivus_tf.grid.config import expand_grid, load_grid_config, parse_shard, run_id, run_seed, shard_runs
from ivus_tf.grid.ledger import append_result, claim_run, read_ledger
from ivus_tf.grid.results import make_result_line

ROOT = Path(__file__).parents[1]
TINY_TRAIN = """\
    arch: unet_res
    width: 0.0625
    image_size: 32
    batch_size: 4
    epochs: 2
    steps_per_epoch: 2
    learning_rate: 1.0e-2
    repeats: 2
    folds: 2
    test_fraction: 0.25
    tb_image_every_epochs: 0
    run_eagerly: true
"""

# The tests of worker processes, shards and clusters check who trains and records which run, not training itself:
# one step of one epoch per run (each process still starts TensorFlow, builds, trains, evaluates and saves).
ONE_STEP = "train_overrides: {epochs: 1, steps_per_epoch: 1}\n"


def write_grid_records(folder: Path) -> Path:
    """8 pullbacks of 4 48x48 frames, calcium and wall-lumen labels on alternate frames: 2 test cases, 2 folds."""
    from tfrecords_builder.writer import write_records

    frames = {f"case{i}": [synthetic_frame(f"case{i}", f"{j:02d}", (48, 48),
                                           ("calcium",) if j % 2 == 0 else ("wall_lumen",), seed=10 * i + j)
                           for j in range(4)] for i in range(8)}
    out = folder / "records"
    write_records(frames, out)
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The grid's records folder (`write_grid_records`), written once per module."""
    return write_grid_records(tmp_path_factory.mktemp("grid_records"))


def write_grid(folder: Path, records: Path, grid: str, name: str = "grid.yaml") -> Path:
    """A tiny train config on `records` and a grid file using it, in `folder`; returns the grid file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.yaml").write_text(f"data: {records}\n" + textwrap.dedent(TINY_TRAIN))
    path = folder / name
    path.write_text("train_config: train.yaml\n" + textwrap.dedent(grid))
    return path


def result_line(run_name: str, scheme: str = "calcium", repeat: int = 0, fold: int = 0, dice: float = 0.5) -> str:
    return make_result_line(run_id=run_name, arch="unet_res", backbone="none", scheme=scheme,
                            lam=1.0 if scheme == "multitask" else None, repeat=repeat, fold=fold, seed=0,
                            metrics={"calcium": {"dice": dice, "average_hausdorff_mm": 0.3}},
                            run_dir=f"runs/{run_name}", wall_time_s=1.0)


# ------------------------------------------------------------------------------------------ expansion, config

def test_expansion_ids_order_and_shards(tmp_path, records):
    weights = tmp_path / "resnet50.weights.h5"
    weights.write_bytes(b"not read before training")
    path = write_grid(tmp_path, records, f"""\
        archs: [unet_res, deeplabv3]
        schemes: [calcium, pretrain, multitask]
        lams: [0.5, 1]
        repeats: [1]
        folds: 2
        imagenet_backbone_weights: {weights.name}
        train_overrides: {{epochs: 3, splits: my-splits.json}}
    """)
    grid, base = load_grid_config(path)
    runs = expand_grid(grid, base, tmp_path / "G")
    assert len(runs) == 1 * 2 * 3 * (2 + 2)  # repeats x folds x models x (calcium, pretrain, 2 lambdas)
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == len(ids) and ids == [r.run_id for r in expand_grid(grid, base, tmp_path / "G")]
    assert ids[:4] == ["unet_res-calcium-r1-f0", "unet_res-pretrain-r1-f0", "unet_res-multitask-lam0.5-r1-f0",
                       "unet_res-multitask-lam1-r1-f0"]
    assert "deeplabv3-imagenet-multitask-lam1-r1-f1" == ids[-1] and ids[12] == "unet_res-calcium-r1-f1"
    for run in runs:
        config = run.config
        assert (config.scheme, config.arch, config.repeat, config.fold) == (run.scheme, run.arch, run.repeat, run.fold)
        assert config.out == str(tmp_path / "G" / "runs" / run.run_id) and config.epochs == 3
        assert config.splits == str(tmp_path / "my-splits.json")  # relative to the grid file
        assert config.backbone_weights == (str(weights) if run.backbone == "imagenet" else None)
        assert run.lam == (config.lam if run.scheme == "multitask" else None)
    assert run_id("deeplabv3", "none", "multitask", 1.0, 0, 2) == "deeplabv3-multitask-lam1-r0-f2"
    shards = [shard_runs(runs, i, 3) for i in range(3)]
    assert sorted(r.run_id for shard in shards for r in shard) == sorted(ids)  # disjoint and covering
    assert [r.run_id for r in shards[1]] == ids[1::3]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_repeats_and_folds_train_with_their_own_seeds(tmp_path, records):
    """The paper repeats its cross-validation to average over random initialisation: each (repeat, fold) gets its
    own seed, derived from the base seed; every model and scheme of one (repeat, fold) shares it."""
    path = write_grid(tmp_path, records, """\
        archs: [unet_res, deeplabv3]
        schemes: [calcium, pretrain]
        repeats: 2
        folds: 2
    """)
    grid, base = load_grid_config(path)
    runs = expand_grid(grid, base, tmp_path / "G")
    seeds = {(run.repeat, run.fold): set() for run in runs}
    for run in runs:
        seeds[run.repeat, run.fold].add(run.config.seed)
        assert run.config.seed == run_seed(0, run.repeat, run.fold)
    assert all(len(values) == 1 for values in seeds.values())  # shared within (repeat, fold)
    distinct = {values.pop() for values in seeds.values()}
    assert len(distinct) == 4  # repeats (and folds) differ
    assert run_seed(0, 1, 0) != run_seed(0, 0, 0) and run_seed(0, 0, 1) != run_seed(0, 0, 0)
    assert run_seed(0, 0, 0) == 407412163  # the documented formula, pinned: sha256 of "ivus-tf run seed 0 0 0"
    other = write_grid(tmp_path / "other", records, "repeats: 2\nfolds: 2\ntrain_overrides: {seed: 7}\n")
    reseeded = expand_grid(*load_grid_config(other), tmp_path / "H")
    assert {r.config.seed for r in reseeded} == {run_seed(7, r, f) for r in range(2) for f in range(2)}
    assert not {r.config.seed for r in reseeded} & distinct


@pytest.mark.parametrize("transfer", [None, "encoder"])
def test_results_line_says_what_pretraining_transferred(tmp_path, records, transfer):
    from ivus_tf.grid.results import validate_result
    from ivus_tf.grid.runner import _result_line

    overrides = f"train_overrides: {{pretrain_transfer: {transfer}}}\n" if transfer else ""
    path = write_grid(tmp_path, records, "schemes: [calcium, pretrain]\nrepeats: 1\nfolds: 1\n" + overrides)
    runs = expand_grid(*load_grid_config(path), tmp_path / "G")
    metrics = {"calcium": {"summary": {"dice": {"mean": 0.5}, "average_hausdorff_mm": {"mean": 0.2}}},
               "selection": {"calcium": {"monitor": "val_calcium_frame_dice", "value": 0.6}}}
    done = {"finished_utc": "2026-01-01T00:00:00+00:00", "wall_time_s": 1.0, "package_version": "0"}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "done.json").write_text(json.dumps(done))
    lines = {run.scheme: json.loads(_result_line(run, tmp_path)) for run in runs}
    assert lines["pretrain"]["pretrain_transfer"] == (transfer or "all_but_classifier")
    assert lines["calcium"]["pretrain_transfer"] is None
    assert lines["calcium"]["val_calcium_dice"] == 0.6 and lines["calcium"]["selection_metric"] == "per_frame_dice"
    with pytest.raises(InputError, match="pretrain_transfer must be null or, for scheme pretrain"):
        validate_result({**lines["calcium"], "pretrain_transfer": "encoder"})
    old = {k: v for k, v in lines["pretrain"].items() if k not in ("pretrain_transfer", "selection_metric")}
    assert validate_result(old)["pretrain_transfer"] is None  # lines written before the field existed


@pytest.mark.parametrize("grid, message", [
    ("archs: [unet_res, unet]\n", "archs: 'unet' is unknown; valid: deeplabv3, unet_res"),
    ("schemes: [calcium, pretraining]\n", "schemes: 'pretraining' is unknown; valid: calcium, pretrain, multitask"),
    ("arch: [unet_res]\n", "unknown key 'arch' (did you mean 'archs'?); valid keys: train_config"),
    ("train_overrides: {scheme: calcium}\n", "train_overrides: scheme set by the grid for each run"),
    ("train_overrides: {epoch: 3}\n", "train_overrides: unknown key 'epoch'"),
    ("repeats: 3\n", "repeats 3 reaches index 2, but the train config's split has repeats 2"),
    ("folds: [0, 0]\n", "folds must list distinct indices"),
    ("strategy: horovod\n", "strategy 'horovod' is unknown; valid: none, mirrored, multiworker"),
    ("imagenet_backbone_weights: missing.h5\n", "imagenet_backbone_weights 'missing.h5': no such file"),
])
def test_bad_grid_config_is_one_line_before_any_run(tmp_path, records, capsys, monkeypatch, grid, message):
    import ivus_tf.training.run

    monkeypatch.setattr(ivus_tf.training.run, "run_training", lambda *a, **k: pytest.fail("a run started"))
    path = write_grid(tmp_path, records, grid)
    assert grid_main(["--config", str(path), "--out", str(tmp_path / "G")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "G" / "runs").exists()


def test_missing_train_config_and_devices_with_strategy_are_errors(tmp_path, records, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("train_config: nowhere.yaml\n")
    assert grid_main(["--config", str(path), "--out", str(tmp_path / "G")]) == 2
    assert "train_config 'nowhere.yaml': no such file" in capsys.readouterr().err
    path = write_grid(tmp_path, records, "schemes: [calcium]\n")
    from ivus_tf.training.config import TrainConfig

    has_strategy = "strategy" in {f.name for f in dataclasses.fields(TrainConfig)}
    code = grid_main(["--config", str(path), "--out", str(tmp_path / "G"), "--devices", "cpu,cpu",
                      "--strategy", "mirrored"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert ("use one or the other" if has_strategy else "needs tf.distribute support in training") in err


def test_strategy_is_passed_to_every_run_when_training_supports_it(tmp_path, records):
    from ivus_tf.training.config import TrainConfig

    path = write_grid(tmp_path, records, "archs: [unet_res]\nschemes: [calcium]\nstrategy: mirrored\n")
    grid, base = load_grid_config(path)
    if "strategy" in {f.name for f in dataclasses.fields(TrainConfig)}:
        assert {r.config.strategy for r in expand_grid(grid, base, tmp_path)} == {"mirrored"}
        assert {r.config.strategy for r in expand_grid(grid, base, tmp_path, strategy="none")} == {"none"}
    else:
        with pytest.raises(InputError, match="strategy 'mirrored' needs tf.distribute"):
            expand_grid(grid, base, tmp_path)
        assert len(expand_grid(grid, base, tmp_path, strategy="none")) == 4


def test_chief_of_a_multiworker_cluster(monkeypatch):
    from ivus_tf.grid.runner import is_chief

    cluster = {"worker": ["a:1", "b:1"]}
    for task, chief in (({"type": "worker", "index": 0}, True), ({"type": "worker", "index": 1}, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert is_chief() is chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], **cluster},
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief()
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief()


# ------------------------------------------------------------------------------------------------ the ledger

def test_corrupt_results_line_stops_the_grid_with_its_line_number(tmp_path, records, capsys, monkeypatch):
    import ivus_tf.training.run

    monkeypatch.setattr(ivus_tf.training.run, "run_training", lambda *a, **k: pytest.fail("a run started"))
    path = write_grid(tmp_path, records, "schemes: [calcium]\n")
    grid_dir = tmp_path / "G"
    grid_dir.mkdir()
    (grid_dir / "results.jsonl").write_text(result_line("unet_res-calcium-r0-f0") + '{"run_id": "unet_res-cal\n')
    assert grid_main(["--config", str(path), "--out", str(grid_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.jsonl line 2: not valid JSON" in err, err
    with pytest.raises(InputError, match="line 2"):
        append_result(grid_dir, result_line("unet_res-calcium-r0-f1", fold=1))


def test_append_refuses_a_recorded_run_and_claims_exclude_each_other(tmp_path):
    assert read_ledger(tmp_path) == []
    assert append_result(tmp_path, result_line("a"))
    assert not append_result(tmp_path, result_line("a", fold=1))  # same run_id
    assert not append_result(tmp_path, result_line("b"))  # same identity (arch, scheme, repeat, fold, seed...)
    assert [r["run_id"] for r in read_ledger(tmp_path)] == ["a"]
    with claim_run(tmp_path, "x") as first, claim_run(tmp_path, "x") as second, claim_run(tmp_path, "y") as other:
        assert first and not second and other
    with claim_run(tmp_path, "x") as again:
        assert again


APPENDER = """
import sys, time
from pathlib import Path
from ivus_tf.grid.ledger import append_result
from ivus_tf.grid.results import make_result_line
grid_dir, name = Path(sys.argv[1]), sys.argv[2]
(grid_dir / f"ready-{name}").touch()
while not (grid_dir / "go").exists():
    time.sleep(0.01)
def line(run, fold):
    return make_result_line(run_id=run, arch="unet_res", backbone="none", scheme="calcium", lam=None, repeat=0,
                            fold=fold, seed=0, metrics={"calcium": {"dice": 0.5, "average_hausdorff_mm": 0.1}},
                            run_dir="runs/" + run, wall_time_s=1.0)
for i in range(40):
    append_result(grid_dir, line(f"{name}-{i}", 1000 * (name == "p1") + i + 100))
    append_result(grid_dir, line(f"shared-{i}", i))  # both processes append these: each must appear once
"""


def test_two_processes_appending_at_once_never_interleave_or_duplicate(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), name], env=env)
               for name in ("p0", "p1")]
    while not all((tmp_path / f"ready-{name}").exists() for name in ("p0", "p1")):
        assert all(w.poll() is None for w in writers), "a writer died"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    reads = 0
    while any(w.poll() is None for w in writers):  # a reader meanwhile never sees half a line
        read_ledger(tmp_path)
        reads += 1
    assert [w.returncode for w in writers] == [0, 0] and reads > 0
    ids = [r["run_id"] for r in read_ledger(tmp_path)]  # validates every line, refuses duplicates
    assert sorted(ids) == sorted([f"p{k}-{i}" for k in (0, 1) for i in range(40)] + [f"shared-{i}" for i in range(40)])
    assert not list(tmp_path.glob(".tmp-*"))


# --------------------------------------------------------------------------------- kill, restart, report

class InterruptRun:
    """A Keras callback raising KeyboardInterrupt (what Ctrl-C or a kill's handler raises) at `epoch` (0-based) of
    the `fit_number`-th fit it sees."""

    def __new__(cls, fit_number: int, epoch: int):
        import keras

        class _Interrupt(keras.callbacks.Callback):
            fits = 0

            def on_train_begin(self, logs=None):
                type(self).fits += 1

            def on_epoch_begin(self, e, logs=None):
                if type(self).fits == fit_number and e == epoch:
                    raise KeyboardInterrupt

        return _Interrupt()


@pytest.fixture(scope="module")
def killed_grid(records, tmp_path_factory):
    """A 4-run grid: killed mid-run 3, restarted and killed again between run 4 finishing and being recorded,
    restarted to the end. Returns what each start did."""
    import ivus_tf.grid.runner as runner
    import ivus_tf.training.run as training_run
    from ivus_tf.grid.runner import run_grid

    folder = tmp_path_factory.mktemp("killed")
    path = write_grid(folder, records, "archs: [unet_res]\nschemes: [calcium, multitask]\nlams: [1]\nfolds: 2\n"
                                       "repeats: 1\n")
    grid_dir = folder / "G"
    lines = []
    with pytest.raises(KeyboardInterrupt):
        run_grid(path, grid_dir, log=lines.append, extra_callbacks=[InterruptRun(3, 1)])
    facts = {"path": path, "grid_dir": grid_dir, "first": list(lines), "after_kill": read_ledger(grid_dir)}
    done = {r["run_id"]: (grid_dir / r["run_dir"] / "done.json").stat().st_mtime_ns for r in facts["after_kill"]}

    calls = []
    real_train, real_append = training_run.run_training, runner.append_result

    def counting(config, log=None, extra_callbacks=()):
        result = real_train(config, log=log, extra_callbacks=extra_callbacks)
        calls.append((Path(config.out).name, result["finished_before"]))
        return result

    def killed_before_append(grid, line):
        if json.loads(line)["run_id"] == "unet_res-multitask-lam1-r0-f1":
            raise KeyboardInterrupt
        return real_append(grid, line)

    mp = pytest.MonkeyPatch()
    mp.setattr(training_run, "run_training", counting)
    mp.setattr(runner, "append_result", killed_before_append)
    lines.clear()
    with pytest.raises(KeyboardInterrupt):
        run_grid(path, grid_dir, log=lines.append)
    facts.update(second=list(lines), second_calls=list(calls), after_second=read_ledger(grid_dir))
    mp.setattr(runner, "append_result", real_append)
    calls.clear()
    lines.clear()
    facts["summary"] = run_grid(path, grid_dir, log=lines.append)
    facts.update(third=list(lines), third_calls=list(calls), final=read_ledger(grid_dir))
    facts["untouched"] = all((grid_dir / "runs" / name / "done.json").stat().st_mtime_ns == mtime
                             for name, mtime in done.items())
    mp.undo()
    return facts


@pytest.mark.slow
def test_a_killed_grid_restarts_without_losing_or_repeating_runs(killed_grid):
    f = killed_grid
    assert [r["run_id"] for r in f["after_kill"]] == ["unet_res-calcium-r0-f0", "unet_res-multitask-lam1-r0-f0"]
    assert any("[1/4] unet_res-calcium-r0-f0 ... done in" in line and "1 done, 3 left" in line for line in f["first"])
    assert "2 recorded already, 2 to run" in f["second"][0]
    # the restart trains only the interrupted run and the one never started; finished runs are not touched
    assert [name for name, _ in f["second_calls"]] == ["unet_res-calcium-r0-f1", "unet_res-multitask-lam1-r0-f1"]
    assert f["untouched"]
    log = (f["grid_dir"] / "logs" / "unet_res-calcium-r0-f1.log").read_text()
    assert "phase calcium: resuming at epoch 2/2" in log
    state = json.loads((f["grid_dir"] / "runs" / "unet_res-calcium-r0-f1" / "checkpoints" / "calcium" /
                        "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert [r["run_id"] for r in f["final"]] == ["unet_res-calcium-r0-f0", "unet_res-multitask-lam1-r0-f0",
                                                 "unet_res-calcium-r0-f1", "unet_res-multitask-lam1-r0-f1"]
    # each run trained with its (repeat, fold)'s seed, recorded in results.jsonl and in its config.yaml
    for record in f["final"]:
        assert record["seed"] == run_seed(0, record["repeat"], record["fold"])
        config = (f["grid_dir"] / record["run_dir"] / "config.yaml").read_text()
        assert f"\nseed: {record['seed']}\n" in config
        assert record["selection_metric"] == "per_frame_dice" and record["pretrain_transfer"] is None
    assert f["final"][0]["seed"] != f["final"][2]["seed"]


@pytest.mark.slow
def test_a_run_finished_but_not_recorded_is_recorded_once_without_retraining(killed_grid):
    f = killed_grid
    assert len(f["after_second"]) == 3  # killed between run 4's done.json and its line
    assert f["third_calls"] == [("unet_res-multitask-lam1-r0-f1", True)]  # run_training returned at once
    assert f["summary"]["trained"] == [] and f["summary"]["recorded"] == ["unet_res-multitask-lam1-r0-f1"]
    assert any("finished before, recorded now (not retrained)" in line and "4 done, 0 left" in line
               for line in f["third"])
    record = f["final"][-1]
    done = json.loads((f["grid_dir"] / "runs" / record["run_id"] / "done.json").read_text())
    metrics = json.loads((f["grid_dir"] / "runs" / record["run_id"] / "metrics.json").read_text())
    assert record["finished_utc"] == done["finished_utc"] and record["wall_time_s"] == done["wall_time_s"]
    assert record["metrics"]["calcium"]["dice"] == pytest.approx(metrics["calcium"]["summary"]["dice"]["mean"])
    assert set(record["metrics"]) == {"calcium", "lumen", "vessel_wall", "vessel", "wall_lumen_mean"}
    assert record["val_calcium_dice"] == pytest.approx(metrics["selection"]["multitask"]["value"])
    assert record["lam"] == 1.0 and record["run_dir"] == "runs/unet_res-multitask-lam1-r0-f1"
    rule, nothing = metrics["calcium"]["rule_baseline"]["summary"], metrics["calcium"]["predict_nothing_baseline"]
    assert record["baselines"] == {
        "rule": {"dice": rule["dice"]["mean"], "average_hausdorff_mm": rule["average_hausdorff_mm"]["mean"]},
        "predict_nothing": {"dice": nothing["dice"]["mean"],
                            "average_hausdorff_mm": nothing["average_hausdorff_mm"]["mean"]}}


@pytest.mark.slow
def test_changed_grid_settings_are_refused_before_any_run(killed_grid, tmp_path, capsys):
    """An unrecorded run folder with other settings stops the grid (a recorded run too: test_hardening_grid)."""
    f = killed_grid
    path = f["path"].with_name("changed.yaml")
    path.write_text(f["path"].read_text() + "train_overrides: {learning_rate: 0.5}\n")
    (f["grid_dir"] / "results.jsonl").rename(tmp_path / "results.jsonl")
    try:
        assert grid_main(["--config", str(path), "--out", str(f["grid_dir"])]) == 2
    finally:
        (tmp_path / "results.jsonl").rename(f["grid_dir"] / "results.jsonl")
    err = capsys.readouterr().err
    assert "was started with other settings (learning_rate 0.01 -> 0.5)" in err and err.count("\n") == 1


@pytest.mark.slow
def test_report_runs_on_the_grid_results(killed_grid):
    from ivus_tf.report.assemble import make_report

    report = make_report(killed_grid["grid_dir"], skip_inference=True, log=lambda text: None)
    table = (report["out"] / "table1.md").read_text()
    assert "| U-Net Res | calcium only | – |" in table and "multi-task | 1 |" in table
    assert "U-Net Res: multi-task (λ=1) vs calcium only | 2 / 2" in table
    assert "| Baselines | rule: bright edge + shadow | – |" in table and "| 2 folds |" in table
    assert "| U-Net Res, calcium only | 2 / 2 |" in table  # tested against the rule, one value per fold


@pytest.mark.slow
def test_list_shows_what_is_recorded(killed_grid, capsys):
    f = killed_grid
    assert grid_main(["--config", str(f["path"]), "--out", str(f["grid_dir"]), "--list", "--shard", "1/2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["unet_res-multitask-lam1-r0-f0\trecorded", "unet_res-multitask-lam1-r0-f1\trecorded"]


# --------------------------------------------------------------------------------- devices, shards in parallel

@pytest.mark.slow
def test_devices_run_one_worker_per_device_and_each_run_once(tmp_path, records):
    path = write_grid(tmp_path, records, "archs: [unet_res]\nschemes: [calcium]\nfolds: 2\nrepeats: 1\n" + ONE_STEP)
    grid_dir = tmp_path / "G"
    result = subprocess.run([sys.executable, "-m", "ivus_tf.grid", "--config", str(path), "--out", str(grid_dir),
                             "--devices", "cpu,cpu"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("[device cpu] grid ") == 2  # two workers
    for name in ("unet_res-calcium-r0-f0", "unet_res-calcium-r0-f1"):
        assert out.count(f"{name}: training") == 1, out  # trained by exactly one worker
    assert sorted(r["run_id"] for r in read_ledger(grid_dir)) == ["unet_res-calcium-r0-f0", "unet_res-calcium-r0-f1"]


@pytest.mark.slow
def test_two_shards_at_once_write_disjoint_lines(tmp_path, records):
    path = write_grid(tmp_path, records, "archs: [unet_res]\nschemes: [calcium]\nfolds: 2\nrepeats: 1\n" + ONE_STEP)
    grid_dir = tmp_path / "G"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shards = [subprocess.Popen([sys.executable, "-m", "ivus_tf.grid", "--config", str(path), "--out", str(grid_dir),
                                "--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, cwd=ROOT) for i in range(2)]
    outputs = [s.communicate()[0] for s in shards]
    assert [s.returncode for s in shards] == [0, 0], outputs
    assert "[1/1] unet_res-calcium-r0-f0 ... done" in outputs[0] and "r0-f1" not in outputs[0]
    assert "[1/1] unet_res-calcium-r0-f1 ... done" in outputs[1] and "r0-f0" not in outputs[1]
    assert sorted(r["run_id"] for r in read_ledger(grid_dir)) == ["unet_res-calcium-r0-f0", "unet_res-calcium-r0-f1"]


@pytest.mark.slow
def test_a_multiworker_grid_trains_each_run_on_both_workers_and_the_chief_records_it(tmp_path, records):
    """`--strategy multiworker` with two local worker processes (TF_CONFIG, loopback ports): every worker enters
    every run (no claiming), the chief writes the run folder and the one results.jsonl line, worker 1 keeps its copy
    in `<run>.worker-1`. tests/test_distribute.py checks that such training equals single-device training."""
    path = write_grid(tmp_path, records, "archs: [unet_res]\nschemes: [calcium]\nfolds: [0]\nrepeats: 1\n" + ONE_STEP)
    grid_dir = tmp_path / "G"
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-m", "ivus_tf.grid", "--config", str(path), "--out",
                                         str(grid_dir), "--strategy", "multiworker"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    for output in outputs:
        assert "[1/1] unet_res-calcium-r0-f0: training" in output, output
    assert [r["run_id"] for r in read_ledger(grid_dir)] == ["unet_res-calcium-r0-f0"]
    run_dir = grid_dir / "runs" / "unet_res-calcium-r0-f0"
    assert (run_dir / "done.json").is_file() and (Path(f"{run_dir}.worker-1") / "done.json").is_file()
    for log in ("unet_res-calcium-r0-f0.log", "unet_res-calcium-r0-f0.worker-1.log"):  # one log per worker
        assert "MultiWorkerMirroredStrategy over 2 replicas" in (grid_dir / "logs" / log).read_text()
