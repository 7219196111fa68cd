"""`run_grid`: train every run of a grid (or of one shard) by calling `run_training`, resumably, one line each.

    prepare (nothing trains):  grid YAML -> runs (`ivus_tf.grid.config`) -> this shard's runs -> results.jsonl read
        and validated -> every run planned (`plan_run`: data, splits, labels, folds, batch; the phantom is built
        here, once); a recorded run must have been recorded with this grid's settings (`run_settings`, kept in
        its results.jsonl line, else its run folder's config.yaml), a run folder of an unrecorded run must hold
        them: a grid folder never mixes runs of different settings in one Table 1 cell
    run, for each run of the shard in grid order:
        recorded in results.jsonl                      -> skipped
        being trained by another process (its lock)    -> skipped (that process records it)
        otherwise, holding its lock: `run_training`    -> trains, resumes an interrupted run from its checkpoint, or
                                                          (done.json there) returns at once: a run killed between
                                                          finishing and being recorded is recorded, not retrained
        -> one results.jsonl line (`ivus_tf.grid.ledger.append_result`), then the lock is released

A grid killed at any moment and started again therefore loses no finished run and trains none twice. Each run's
training output goes to GRID_DIR/logs/<run_id>.log; the console gets one line when a run starts and one when it
ends, with done/left counts, elapsed time and an estimate of the time left, and while a run trains a line at most
every `PROGRESS_INTERVAL_S` (epoch k of N over its phases, elapsed, the run's ETA; `RunProgress`). A run whose loss
turns non-finite (`TrainingError`) is reported and the grid goes on; the exit status then says so. Ctrl-C or
SIGTERM prints one "interrupted" line (what is recorded, how to resume) and the grid exits 130 or 143.

With `strategy: multiworker` every worker of the TF_CONFIG cluster trains the same run together, so runs are not
claimed (all workers must enter each run) and only the chief appends to results.jsonl.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ivus_tf.core.errors import InputError
from ivus_tf.grid.config import RUNS_DIR, GridRun, check_backbone_files, expand_grid, load_grid_config, shard_runs
from ivus_tf.grid.ledger import append_result, claim_run, read_ledger, results_path
from ivus_tf.grid.results import (
    baselines_from_run,
    make_result_line,
    metrics_from_run,
    resolve_run_dir,
    validation_calcium_dice,
)
from ivus_tf.run_folder import RunFolder
from ivus_tf.training.config import ADDED_LATER_DEFAULTS
from ivus_tf.training.distribute import is_chief, worker_run_dir

LOGS_DIR = "logs"
PARALLEL_ENV = "IVUS_TF_GRID_PARALLEL"  # set by --devices: workers sharing the runs, for the time estimate


@dataclasses.dataclass(frozen=True)
class GridPlan:
    grid_dir: Path
    runs: list[GridRun]  # the whole grid
    mine: list[GridRun]  # this shard's runs, in grid order
    shard: tuple[int, int]
    strategy: str


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))  # as ivus_tf.grid.progress.clock (that imports Keras)


# fields that may differ between runs of one grid cell without changing what was trained: where things are
NOT_SETTINGS = ("out", "data", "splits", "phantom_config", "strategy")
PROGRESS_INTERVAL_S = 60.0


def run_settings(config, records_fingerprint: str | None) -> dict:
    """What a run's results must be compared on: every TrainConfig field but paths and strategy (`NOT_SETTINGS`),
    plus the fingerprint of its records (which stands for the data path)."""
    from ivus_tf.core.config import to_mapping

    settings = {k: v for k, v in to_mapping(config).items() if k not in NOT_SETTINGS}
    return {**settings, "records_fingerprint": records_fingerprint}


def settings_differences(saved: dict, wanted: dict) -> list[str]:
    """`field saved -> wanted` for every field that differs (a field missing on one side shows as None)."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            short = key == "records_fingerprint"
            out.append(f"{key} {str(a)[:12] if short else repr(a)} -> {str(b)[:12] if short else repr(b)}")
    return out


def _saved_settings(record: dict | None, run_dir: Path) -> dict | None:
    """The settings a run was recorded (results.jsonl) or started (its run folder) with; None if unknown."""
    if record is not None and record.get("settings") is not None:
        return record["settings"]
    folder = RunFolder(run_dir)
    if not folder.has_config():
        return None
    fingerprint = (folder.read_records_json() or {}).get("fingerprint")
    settings = run_settings(folder.load_config(), fingerprint)
    if fingerprint is None:  # a run folder of an older version: its records cannot be compared
        settings.pop("records_fingerprint")
    return settings


def _check_run(run: GridRun, plan, record: dict | None, grid_dir: Path) -> bool:
    """Refuse a run recorded or started with other settings than this grid's (before any run trains); False when
    a recorded run's settings cannot be known (neither in results.jsonl nor in a run folder)."""
    run_dir = Path(resolve_run_dir(record, results_path(grid_dir))) if record is not None else plan.run_dir
    saved = _saved_settings(record, run_dir)
    if saved is None:
        return record is None
    wanted = run_settings(plan.config, plan.records_fingerprint)
    if "records_fingerprint" not in saved:
        wanted.pop("records_fingerprint")
    for key, value in ADDED_LATER_DEFAULTS.items():  # a run recorded before the field existed trained with this
        if key not in saved and wanted.get(key) == value:
            wanted.pop(key)
    diffs = settings_differences(saved, wanted)
    if diffs:
        where = f"{grid_dir}: run {run.run_id} is recorded in results.jsonl" if record is not None else \
            f"{run_dir}: run {run.run_id} was started"
        raise InputError(f"{where} with other settings ({'; '.join(diffs)}); one grid folder holds one grid: "
                         "restore the grid config, or use another --out")
    return True


def prepare_grid(config_path: str | Path, grid_dir: str | Path, shard: tuple[int, int] = (0, 1),
                 strategy: str | None = None, log: Callable[[str], None] = print) -> GridPlan:
    """Everything checked before any run starts (module docstring); `InputError` for the first problem."""
    from ivus_tf.training.run import plan_run

    grid_dir = Path(grid_dir)
    grid, base = load_grid_config(config_path)
    strategy = grid.strategy if strategy is None else strategy
    runs = expand_grid(grid, base, grid_dir.resolve(), str(config_path), strategy)
    mine = shard_runs(runs, *shard)
    recorded = {r["run_id"]: r for r in read_ledger(grid_dir)}
    if any(run.backbone != "none" and run.run_id not in recorded for run in mine):
        check_backbone_files(grid, str(config_path))
    seen = set()

    def log_once(text: str) -> None:  # plan_run says where the data is for every run
        if text not in seen:
            seen.add(text)
            log(text)

    unknown = [run.run_id for run in mine
               if not _check_run(run, plan_run(run.config, log_once), recorded.get(run.run_id), grid_dir)]
    if unknown:
        log(f"warning: {len(unknown)} recorded run(s) carry no settings in results.jsonl and have no run folder "
            f"(e.g. {unknown[0]}): not checked against this grid's settings")
    return GridPlan(grid_dir, runs, mine, shard, strategy)


def _result_line(run: GridRun, run_dir: Path) -> str:
    """The run's results.jsonl line, from its metrics.json, done.json and (settings) config.yaml, records.json."""
    folder = RunFolder(run_dir)
    metrics_json, done = folder.read_metrics(), folder.read_done()
    settings = _saved_settings(None, run_dir)
    return make_result_line(run_id=run.run_id, arch=run.arch, backbone=run.backbone, scheme=run.scheme, lam=run.lam,
                            repeat=run.repeat, fold=run.fold, seed=run.config.seed,
                            metrics=metrics_from_run(metrics_json), run_dir=f"{RUNS_DIR}/{run.run_id}",
                            wall_time_s=done["wall_time_s"], finished_utc=done["finished_utc"],
                            package_version=done["package_version"],
                            val_calcium_dice=validation_calcium_dice(metrics_json),
                            baselines=baselines_from_run(metrics_json), settings=settings,
                            pretrain_transfer=run.config.pretrain_transfer if run.scheme == "pretrain" else None,
                            selection_metric=run.config.selection_metric)


class _Tee:
    """A stdout that writes to several streams (the run's log file, and the console with --verbose)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()

    def isatty(self):
        return False


def _train(run: GridRun, grid_dir: Path, console, verbose: bool, extra_callbacks: Sequence) -> dict:
    """`run_training(run.config)` with its output in GRID_DIR/logs/<run_id>.log (and on the console if verbose)."""
    from ivus_tf.training.run import run_training

    log_name = worker_run_dir(run.run_id, run.config.strategy)  # a multi-worker non-chief: <run_id>.worker-<i>
    log_path = grid_dir / LOGS_DIR / f"{log_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log_file:
        stream = _Tee(log_file, console) if verbose else log_file
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                return run_training(run.config, log=lambda text: print(text, file=stream, flush=True),
                                    extra_callbacks=extra_callbacks)
        finally:
            import keras

            keras.backend.clear_session()  # one process trains many models: drop the last one's graphs and names


def run_grid(config_path: str | Path, grid_dir: str | Path, shard: tuple[int, int] = (0, 1),
             strategy: str | None = None, log: Callable[[str], None] | None = None, verbose: bool = False,
             extra_callbacks: Sequence = (), progress_interval_s: float = PROGRESS_INTERVAL_S) -> dict:
    """Run this shard of the grid (module docstring). Returns {"trained", "recorded", "skipped", "failed",
    "total"}: run ids trained now, recorded now (trained or finished before), skipped (recorded already, or
    claimed by another process) and failed ({run_id: reason})."""
    console = sys.stdout
    log = log or (lambda text: print(text, file=console, flush=True))
    started = time.perf_counter()
    if (strategy or load_grid_config(config_path)[0].strategy) == "multiworker":  # the flag, else the config's
        from ivus_tf.training.distribute import make_strategy

        make_strategy("multiworker")  # before any TF work of the planning (`ivus_tf.training.distribute`)
    plan = prepare_grid(config_path, grid_dir, shard, strategy, log)
    grid_dir, mine = plan.grid_dir, plan.mine
    multiworker = plan.strategy == "multiworker"
    writer = is_chief() if multiworker else True
    parallel = max(1, int(os.environ.get(PARALLEL_ENV, "1")))
    recorded = {r["run_id"] for r in read_ledger(grid_dir)}
    where = f"shard {shard[0]}/{shard[1]}: " if shard[1] > 1 else ""
    todo = [r for r in mine if r.run_id not in recorded]
    log(f"grid {config_path}: {len(plan.runs)} runs, {where}{len(mine)} here, {len(mine) - len(todo)} recorded "
        f"already, {len(todo)} to run -> {grid_dir / 'results.jsonl'} (training logs in {grid_dir / LOGS_DIR})")
    summary = {"trained": [], "recorded": [], "skipped": [], "failed": {}, "total": len(mine)}
    durations = []
    current = None
    try:
        for number, run in enumerate(mine, start=1):
            tag = f"[{number}/{len(mine)}] {run.run_id}"
            if run.run_id in {r["run_id"] for r in read_ledger(grid_dir)}:
                summary["skipped"].append(run.run_id)
                continue
            claim = claim_run(grid_dir, run.run_id) if not multiworker else contextlib.nullcontext(True)
            with claim as held:
                if not held or run.run_id in {r["run_id"] for r in read_ledger(grid_dir)}:
                    if not held:
                        log(f"{tag}: being trained by another process; skipped")
                    summary["skipped"].append(run.run_id)
                    continue
                backbone = "" if run.backbone == "none" else " " + run.backbone
                log(f"{tag}: training ({run.scheme}, {run.arch}{backbone}"
                    f"{f', lambda {run.lam:g}' if run.lam is not None else ''}, repeat {run.repeat} fold {run.fold})")
                run_started = time.perf_counter()
                from ivus_tf.grid.progress import RunProgress
                from ivus_tf.training.callbacks import TrainingError
                from ivus_tf.training.schemes import phases_of

                try:
                    current = run.run_id
                    progress = RunProgress(tag, [(p.name, p.epochs) for p in phases_of(run.config)], log,
                                           progress_interval_s)
                    result = _train(run, grid_dir, console, verbose, [*extra_callbacks, progress])
                except TrainingError as error:
                    summary["failed"][run.run_id] = str(error)
                    log(f"{tag}: FAILED: {error} (log: {grid_dir / LOGS_DIR / run.run_id}.log); going on")
                    continue
                took = time.perf_counter() - run_started
                if result["finished_before"]:
                    what = "finished before, recorded now (not retrained)"
                else:
                    durations.append(took)
                    summary["trained"].append(run.run_id)
                    what = f"done in {took:.0f} s"
                if writer and append_result(grid_dir, _result_line(run, Path(result["run_dir"]))):
                    summary["recorded"].append(run.run_id)
            recorded = {r["run_id"] for r in read_ledger(grid_dir)}
            done = sum(r.run_id in recorded for r in mine)
            left = len(mine) - done - len(summary["failed"])
            eta = _clock(left * sum(durations) / len(durations) / parallel) if durations else "unknown"
            dice = metrics_from_run(result["metrics"])["calcium"]["dice"]
            score = f"test calcium Dice {dice:.3f}" if dice is not None else "no test calcium Dice"
            rule = ((baselines_from_run(result["metrics"]) or {}).get("rule") or {}).get("dice")
            score += f", rule baseline {rule:.3f}" if rule is not None else ""
            log(f"{tag} ... {what} ({score}); {done} done, {left} left, elapsed "
                f"{_clock(time.perf_counter() - started)}, ETA {eta}")
    except KeyboardInterrupt as interrupt:
        from ivus_tf.core.errors import Terminated

        done = sum(r.run_id in {x["run_id"] for x in read_ledger(grid_dir)} for r in mine)
        log(f"grid: interrupted{' (SIGTERM)' if isinstance(interrupt, Terminated) else ''}"
            f"{f' while training {current}' if current else ''}; {done} of {len(mine)} runs recorded in "
            f"{grid_dir / 'results.jsonl'}; start the same command again to resume (a run resumes from its last "
            "finished epoch)")
        raise
    failed = summary["failed"]
    log(f"grid: {len(summary['trained'])} trained, {len(summary['recorded'])} recorded, {len(failed)} failed in "
        f"{_clock(time.perf_counter() - started)}" + (f" ({', '.join(failed)})" if failed else ""))
    return summary
