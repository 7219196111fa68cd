"""`run_training(config)`: one training run from data to metrics.json, resumable, every input checked first.

    plan:     records (or the cached phantom), their files checked against index.json (sizes always, sha256 once
              per change) -> splits file -> the scheme's phases -> labels and folds checked -> the batch checked
              against the training frames and this machine's memory -> run folder (config.yaml and records.json;
              an existing folder must hold the same config and have started on the same records) [nothing trained]
    train:    each phase in order (`ivus_tf.training.phase`), skipping finished ones, resuming an interrupted one
    select:   the last phase's best validation epoch -> RUN_DIR/model.keras
    evaluate: the independent test cases at original resolution (`ivus_tf.evaluation.evaluate_model`), next to
              the calcium rule fitted on the training cases (`rule_baseline`, unless switched off)
              -> metrics.json, TensorBoard HParams, done.json

The run folder's layout is `ivus_tf.run_folder.RunFolder` (records.json keys it to its records: a resume on
rebuilt records is refused); a finished one (done.json) is reported, not retrained.

Resume: the first phase not done resumes from its checkpoint (`ivus_tf.training.state`, `phase`): weights with
batch-norm statistics, Adam's state and step, the epoch, the selection and early-stopping state (best value, its
epoch, epochs without improvement), the history; the batches continue where they stopped. Finished phases are
skipped; a finished run (done.json + metrics.json) is reported, not retrained. Ctrl-C or a kill loses at most the
epoch in progress.

Reproducibility: `keras.utils.set_random_seed(seed + phase index)` before each phase (weights, dropout), tf.data
seeds and stateless augmentation keyed by (seed, batch), and with `deterministic` TensorFlow's op determinism,
under which TensorFlow raises for any op without a deterministic kernel: U-Net Res and DeepLabV3 training and
evaluation use none on CPU, and the cost is within run-to-run noise. One command gives bitwise-identical
numbers run to run on one machine (`make demo` twice, including regenerating the phantom), and a resumed run ends
with the weights of an uninterrupted one (tested). Not covered: Keras's dropout seed state is not checkpointed, so
after a resume DeepLabV3's ASPP dropout masks restart from the phase's seed; oneDNN may round differently on
another CPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ivus_tf.core.atomic import atomic_file, atomic_write_json, atomic_write_text
from ivus_tf.core.config import to_mapping
from ivus_tf.core.errors import InputError
from ivus_tf.core.version import __version__
from ivus_tf.core.vocab import CALCIUM, WALL_LUMEN
from ivus_tf.run_folder import RunFolder
from ivus_tf.splits import case_tasks_from_index, fold_cases, load_or_create_splits
from ivus_tf.training.config import TrainConfig, config_differences
from ivus_tf.training.distribute import check_workers_agree, describe_strategy, make_strategy, replicas, worker_run_dir
from ivus_tf.training.schemes import Phase, PhaseCases, check_data, phases_of
from tfrecords_builder.index import records_fingerprint

# Training memory per frame at 256x256 and width 1.0, per parameter (weights, gradients, Adam's two moments) and
# of the process (TensorFlow, the data), from the peak RSS of bench/bench_models.py (BENCHMARKS.md: batch 2 and 12
# on CPU, 2.4-8.1 GB, matched within 0.1 GB); activations scale with the width and the pixels, parameters with the
# width squared.
TRAIN_BYTES_PER_FRAME = {"unet_res": 0.54e9, "deeplabv3": 0.33e9}
TRAIN_BYTES_PER_PARAMETER, FULL_WIDTH_PARAMETERS, TRAIN_BASE_BYTES = 16, 41.5e6, 1e9


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Everything decided before training: resolved config (absolute data/splits/out), phases and their cases."""

    config: TrainConfig
    records_dir: Path
    run_dir: Path
    splits_path: Path
    phases: tuple[Phase, ...]
    cases: dict[str, PhaseCases]
    test_cases: list[str]
    test_tasks: tuple[str, ...]
    records_fingerprint: str = ""

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)


def plan_run(config: TrainConfig, log: Callable[[str], None] = print) -> RunPlan:
    """Resolve and check data, splits, scheme and run folder; `InputError` for anything that would fail later."""
    from tfrecords_builder.index import read_index

    config.validate()
    phases = phases_of(config)
    if config.data:
        records = Path(config.data).expanduser().resolve()
        if not records.is_dir():
            raise InputError(f"{config.data}: no such records folder (build one with python -m tfrecords_builder "
                             "build, or leave --data out to use the embedded phantom)")
    else:
        from ivus_tf.training.phantom_cache import ensure_phantom_records

        records = ensure_phantom_records(config, log)
    index = read_index(records)
    from ivus_tf.training.phantom_cache import cache_root
    from tfrecords_builder.index import verify_records

    verify_records(records, index, cache_root() / "verified-records", log)
    splits_path = Path(config.splits).expanduser() if config.splits else records.parent / f"{records.name}-splits.json"
    try:
        splits = load_or_create_splits(splits_path, case_tasks_from_index(index), test_fraction=config.test_fraction,
                                       n_test_cases=config.n_test_cases, repeats=config.repeats,
                                       folds=config.folds, seed=config.split_seed,
                                       test_both_labels=config.test_both_labels)
    except OSError as error:
        where = "" if config.splits else " beside the records"
        raise InputError(f"{splits_path}: cannot write the splits file{where} ({error.strerror or error}); pass "
                         "--set splits=PATH to keep it elsewhere") from error
    config = dataclasses.replace(config, data=str(records), splits=str(splits_path.resolve()))
    cases, _ = check_data(config, phases, splits, records, splits_path)
    check_batch_size(config, phases, cases, index, records)
    test_cases = fold_cases(splits, config.repeat, config.fold)[2]
    test_tasks = tuple(t for t in phases[-1].tasks if fold_cases(splits, config.repeat, config.fold, t)[2])
    run_dir = Path(config.out).expanduser() if config.out else Path("runs") / config.default_run_name()
    run_dir = Path(worker_run_dir(str(run_dir.resolve()), config.strategy))  # a multi-worker non-chief: its copy
    config = dataclasses.replace(config, out=str(run_dir))
    return RunPlan(config, records, run_dir.resolve(), splits_path.resolve(), phases, cases, test_cases, test_tasks,
                   records_fingerprint(index))


def check_batch_size(config: TrainConfig, phases: Sequence[Phase], cases: dict[str, PhaseCases], index: dict,
                     records: Path) -> None:
    """Refuse a batch larger than a phase's training frames of a task (the pipeline would repeat frames within
    one batch) or one that clearly cannot fit in this machine's memory (`train_bytes`)."""
    from ivus_tf.data.pipeline import PipelineConfig

    def shares(batch: int, phase: Phase) -> dict[str, int]:
        if len(phase.tasks) == 1:
            return {phase.tasks[0]: batch}
        calcium = PipelineConfig(batch_size=batch, calcium_fraction=config.calcium_fraction).calcium_frames_per_batch()
        return {CALCIUM: calcium, WALL_LUMEN: batch - calcium}

    for phase in phases:
        frames = {task: sum(index["cases"][case]["task_frames"].get(task, 0) for case in cases[phase.name].train)
                  for task in phase.tasks}
        too_many = {task: n for task, n in shares(config.batch_size, phase).items() if n > frames[task]}
        if too_many:
            fits = next((b for b in range(min(config.batch_size, sum(frames.values())), 0, -1)
                         if all(n <= frames[t] for t, n in shares(b, phase).items())), 1)
            task, share = next(iter(too_many.items()))
            raise InputError(f"{records}: batch_size {config.batch_size} takes {share} {task}-labelled frames per "
                             f"batch, but the training cases of phase {phase.name} (repeat {config.repeat} fold "
                             f"{config.fold}) hold only {frames[task]}; use --batch-size {fits} or less")
    if config.strategy != "none":  # the global batch is spread over devices whose memory is not known here
        return
    from ivus_tf.core.memory import gigabytes, memory_bytes

    need, total = train_bytes(config), memory_bytes()
    if total and need > total:
        fits = max(0, int((total - train_bytes(dataclasses.replace(config, batch_size=0))) //
                          (train_bytes(dataclasses.replace(config, batch_size=1)) -
                           train_bytes(dataclasses.replace(config, batch_size=0)))))
        raise InputError(f"batch_size {config.batch_size} of {config.image_size}x{config.image_size} frames needs "
                         f"about {gigabytes(need)} to train {config.arch} at width {config.width:g}, more than this "
                         f"machine's {gigabytes(total)}; use --batch-size {fits} or less, or a smaller --image-size")


def train_bytes(config: TrainConfig) -> float:
    """Rough training memory of `config`: activations per frame (`TRAIN_BYTES_PER_FRAME`, scaled by the width and
    the pixels) times the batch, plus weights, gradients and Adam's moments."""
    width = min(config.width, 4.0)
    per_frame = TRAIN_BYTES_PER_FRAME[config.arch] * width * (config.image_size / 256) ** 2
    return (config.batch_size * per_frame + TRAIN_BYTES_PER_PARAMETER * FULL_WIDTH_PARAMETERS * width ** 2
            + TRAIN_BASE_BYTES)


def check_same_records(run: RunFolder, records_dir: Path, fingerprint: str) -> None:
    """Refuse to resume `run` on records other than those it started on (records.json)."""
    try:
        saved = run.read_records_json()
    except InputError as error:
        raise InputError(f"{error}; delete the run folder to start over") from None
    if saved is not None and saved.get("fingerprint") != fingerprint:
        raise InputError(f"{run.path}: the run started on other records than {records_dir} holds now (rebuilt or "
                         f"changed since: its index.json differs from the one in {run.records_json.name}); delete "
                         "the run folder to train on these records, or pass another --out")


def _claim_run_dir(plan: RunPlan) -> bool:
    """Write config.yaml into a new run folder, or check an existing one holds this config and started on these
    records. True if finished."""
    run, run_dir = plan.run, plan.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir}: exists and is not a folder; pass another --out")
    if run.has_config():
        diffs = config_differences(run.load_config(), plan.config)
        if diffs:
            raise InputError(f"{run_dir}: holds a run with other settings ({'; '.join(diffs)}); pass another --out "
                             "or delete the folder to start over")
        check_same_records(run, plan.records_dir, plan.records_fingerprint)
        if not run.records_json.is_file():  # a run folder of an older version: key it now
            _write_records_json(plan)
        return run.is_finished()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"{run_dir}: exists, is not empty and holds no {run.config_path.name}; not a run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_records_json(plan)
    import yaml

    header = (f"# ivus-tf training run: fully resolved config, loadable with --config\n"
              f"# package_version: {__version__}\n# written: {datetime.datetime.now().isoformat(timespec='seconds')}\n")
    atomic_write_text(run.config_path, header + yaml.safe_dump(to_mapping(plan.config), sort_keys=False))
    return False


def _write_records_json(plan: RunPlan) -> None:
    atomic_write_json(plan.run.records_json,
                      {"records": str(plan.records_dir), "fingerprint": plan.records_fingerprint})


def _progress(plan: RunPlan) -> list[int]:
    """[finished, then epoch and done of each phase]: how far the run folder got (compared across workers)."""
    from ivus_tf.training.state import read_state

    progress = [int(plan.run.is_finished())]
    for phase in plan.phases:
        state = read_state(plan.run.phase(phase.name))
        progress += [state.epoch, int(state.done)]
    return progress


def _hparams(config: TrainConfig) -> dict:
    keys = ("scheme", "arch", "lam", "width", "head", "image_size", "batch_size", "learning_rate", "epochs",
            "pretrain_epochs", "freeze_encoder_epochs", "pretrain_transfer", "patience", "calcium_fraction",
            "loss_weighting", "loss", "selection_metric", "appearance_augmentation", "repeat", "fold", "seed")
    values = to_mapping(config)
    return {key: (values[key] if values[key] is not None else "same as epochs") for key in keys}


def _headline(metrics: dict) -> dict:
    """Scalar results for the HParams view: test mean Dice and average Hausdorff per section, best val Dice."""
    out = {}
    for section in ("calcium", "lumen", "vessel_wall", "wall_lumen_mean"):
        if section in metrics:
            summary = metrics[section]["summary"]
            out[f"test/{section}_dice"] = summary["dice"]["mean"]
            out[f"test/{section}_average_hausdorff_mm"] = summary["average_hausdorff_mm"]["mean"]
    for name, phase in metrics.get("selection", {}).items():
        out[f"val/{name}_{phase['monitor'].removeprefix('val_')}"] = phase["value"]
    return out


def run_training(config: TrainConfig, log: Callable[[str], None] | None = None,
                 extra_callbacks: Sequence = ()) -> dict:
    """Run (or resume, or report a finished) training run; return {"run_dir", "metrics", "phases", "finished_before"}.

    `extra_callbacks` are added to every phase's `fit` (tests use them to interrupt a run).
    """
    log = log or (lambda text: print(text, flush=True))
    started = time.perf_counter()
    strategy = make_strategy(config.strategy)  # first: MultiWorkerMirroredStrategy wants to precede other TF work
    if config.batch_size % replicas(strategy):
        raise InputError(f"batch_size {config.batch_size} is the global batch and must be a multiple of the "
                         f"{replicas(strategy)} replicas of strategy {config.strategy}")
    plan = plan_run(config, log)
    check_workers_agree(strategy, _progress(plan), str(plan.run_dir))  # multi-worker: all resume from one point
    if _claim_run_dir(plan):
        metrics = plan.run.read_metrics()
        log(f"run {plan.run_dir} already finished; not retraining (delete the folder to train again)")
        _print_result(plan, metrics, log)
        return {"run_dir": plan.run_dir, "metrics": metrics, "phases": {}, "finished_before": True}
    config = plan.config
    log(f"run: {plan.run_dir} (scheme {config.scheme}, {config.arch} width {config.width:g}, "
        f"{config.image_size}x{config.image_size}, repeat {config.repeat} fold {config.fold}; splits "
        f"{plan.splits_path}; {len(plan.test_cases)} test cases)")
    if strategy is not None:
        log(f"distributed: {describe_strategy(strategy)}, global batch {config.batch_size}")

    import keras

    from ivus_tf.core.tf_import import import_tensorflow
    from ivus_tf.evaluation import evaluate_model, rule_baseline, write_metrics_json
    from ivus_tf.postprocess import PRESETS as POSTPROCESS_PRESETS
    from ivus_tf.tensorboard_logging import write_hparams
    from ivus_tf.training.phase import load_selected, train_phase

    tf = import_tensorflow()
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    states = {}
    for i, phase in enumerate(plan.phases):
        keras.utils.set_random_seed(config.seed + i)
        states[phase.name] = train_phase(config, phase, plan.cases[phase.name], plan.records_dir, plan.run, log,
                                         extra_callbacks)
    final, run = plan.phases[-1], plan.run
    model = load_selected(run, final)
    with atomic_file(run.model_path) as tmp:
        shutil.copyfile(run.phase(final.name).best_model, tmp)
    log(f"evaluating the selected model (phase {final.name}, epoch {states[final.name].best_epoch + 1}) on "
        f"{len(plan.test_cases)} test cases at original resolution")
    predictions = run.predictions_dir if config.save_predictions else None
    metrics = evaluate_model(model, plan.records_dir, plan.test_cases, plan.test_tasks, config.image_size,
                             batch_size=config.batch_size, predictions_dir=predictions,
                             postprocess=POSTPROCESS_PRESETS[config.postprocess])
    if config.rule_baseline and "calcium" in plan.test_tasks:
        metrics["calcium"]["rule_baseline"] = rule_baseline(plan.records_dir, plan.cases[final.name].train,
                                                            plan.test_cases, log=log)
    metrics["selection"] = {
        phase.name: {"monitor": phase.monitor, "value": states[phase.name].best,
                     "epoch": states[phase.name].best_epoch + 1, "epochs_run": states[phase.name].epoch,
                     "stopped_early": states[phase.name].stopped_early}
        for phase in plan.phases}
    metrics["run"] = {"scheme": config.scheme, "arch": config.arch, "repeat": config.repeat, "fold": config.fold,
                      "seed": config.seed, "selection_metric": config.selection_metric,
                      "pretrain_transfer": config.pretrain_transfer if config.scheme == "pretrain" else None,
                      "records": str(plan.records_dir), "splits": str(plan.splits_path),
                      "package_version": __version__}
    write_metrics_json(run.metrics_path, metrics)
    write_hparams(str(run.tb_dir), _hparams(config), _headline(metrics))
    done = {"finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(time.perf_counter() - started, 1), "package_version": __version__}
    atomic_write_json(run.done_path, done)
    _print_result(plan, metrics, log)
    log(f"done in {done['wall_time_s'] / 60:.1f} min")
    return {"run_dir": plan.run_dir, "metrics": metrics, "phases": states, "finished_before": False}


def _print_result(plan: RunPlan, metrics: dict, log: Callable[[str], None]) -> None:
    from ivus_tf.evaluation import format_summary

    log(f"test set ({len(plan.test_cases)} cases, metrics at original resolution; {plan.run.metrics_path}):")
    for line in format_summary(metrics).splitlines():
        log(f"  {line}")
    from ivus_tf.core.commands import python, shown, tool

    run_dir, name = shown(plan.run_dir), plan.run_dir.name
    log(f"TensorBoard: {tool('tensorboard')} --logdir {shown(plan.run.tb_dir)}")
    log(f"export:      {python()} -m ivus_tf.export {run_dir} --out saved_models/{name}")
    log(f"predict:     {python()} -m ivus_tf.predict --model saved_models/{name} --input PULLBACK "
        f"--out predictions/{name}   (PULLBACK: a DICOM, a folder of frames or a manifest)")
