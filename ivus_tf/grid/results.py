"""results.jsonl: one line per finished training run of a grid, the single source of truth for its schema.

The grid runner appends lines through `make_result_line`; the report reads them back through `read_results`. Both
validate each record with `validate_result` (the fields: `RESULT_FIELDS`), so a line the report would refuse is
never written. A broken line, an unknown field or a repeated run (it would count twice in every mean and t-test)
is an `InputError` naming the file and line, never skipped. A relative `run_dir` is relative to the folder holding
results.jsonl. No TensorFlow here. An example line and the rules: docs/grid_and_report.md#resultsjsonl.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import ARCHS, BACKBONES, PRETRAIN_TRANSFERS, SCHEMES, SELECTION_METRICS

__all__ = ["BACKBONES", "BASELINES", "METRIC_NAMES", "METRIC_SECTIONS", "RESULT_FIELDS", "RESULTS_NAME",
           "baselines_from_run", "make_result_line", "metrics_from_run", "read_results", "resolve_run_dir", "run_key",
           "validate_result", "validation_calcium_dice"]

RESULTS_NAME = "results.jsonl"
METRIC_SECTIONS = ("calcium", "lumen", "vessel_wall", "vessel", "wall_lumen_mean")
METRIC_NAMES = ("dice", "average_hausdorff_mm")
# calcium baselines scored on a run's test frames: metrics.json calcium[<name>_baseline]
BASELINES = ("rule", "predict_nothing")

RESULT_FIELDS: dict[str, str] = {
    "run_id": "str, unique in the file: the grid's name of the run",
    "arch": f"str, one of {', '.join(ARCHS)} (ivus_tf.models.build_model)",
    "backbone": "str, 'none' (trained from scratch), 'imagenet' (encoder from Keras' ImageNet ResNet50) or 'coco' "
                "(encoder and ASPP from torchvision's COCO DeepLabV3, python -m ivus_tf.convert: the paper's "
                "'DeepLabV3 COCO' row); deeplabv3 only",
    "scheme": f"str, one of {', '.join(SCHEMES)} (calcium-only, wall-lumen pre-training, multi-task)",
    "lam": "number >= 0 for scheme multitask (L = lam * L_calcium + L_wall_lumen), null otherwise",
    "repeat": "int >= 0, the cross-validation repeat",
    "fold": "int >= 0, the fold within the repeat",
    "seed": "int >= 0, the run's random seed (a grid derives it per repeat and fold: ivus_tf.grid.config.run_seed)",
    "pretrain_transfer": f"str or null, optional: scheme pretrain only, what the calcium phase took from the "
                         f"wall-lumen model, one of {', '.join(PRETRAIN_TRANSFERS)} (TrainConfig.pretrain_transfer)",
    "selection_metric": f"str or null, optional: the validation Dice each phase selected its epoch on, one of "
                        f"{', '.join(SELECTION_METRICS)} (TrainConfig.selection_metric)",
    "metrics": "{section: {'dice': mean test-frame Dice in [0, 1] or null, 'average_hausdorff_mm': mean test-frame "
               "average Hausdorff distance in mm or null}}; sections: calcium (required), lumen, vessel_wall, "
               "vessel, wall_lumen_mean (when the run evaluated a wall-lumen head); from metrics.json "
               "section['summary'][metric]['mean'] (metrics_from_run)",
    "val_calcium_dice": "number in [0, 1] or null, optional: the best validation calcium Dice of the run's last "
                        "phase (per frame or pooled, as selection_metric says), the value its model was selected "
                        "on (validation_calcium_dice); the report picks the multi-task lambda on it",
    "baselines": "{baseline: {'dice', 'average_hausdorff_mm'}} or null, optional: the test calcium means of the "
                 "baselines scored next to the model, 'rule' (bright edge + shadow, fitted on the run's training "
                 "cases, ivus_tf.baselines) and 'predict_nothing'; from metrics.json calcium['<name>_baseline'] "
                 "(baselines_from_run)",
    "run_dir": "str, the run folder (config.yaml, metrics.json, model.keras, predictions/); relative paths are "
               "relative to the folder holding results.jsonl",
    "wall_time_s": "number >= 0, the run's wall-clock time in seconds",
    "finished_utc": "str, ISO 8601 time the run finished",
    "package_version": "str, ivus_tf.__version__ of the run",
    "settings": "object or null, optional: every TrainConfig field of the run but its paths and strategy, plus "
                "records_fingerprint (the records' index, tfrecords_builder.index.records_fingerprint); the grid "
                "refuses to add runs of other settings to a grid folder",
}
OPTIONAL_FIELDS = ("val_calcium_dice", "baselines", "settings", "pretrain_transfer", "selection_metric")


def _fail(where: str, problem: str):
    raise InputError(f"{where}: {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_metric(where: str, section: str, name: str, value) -> None:
    if value is None:
        return
    if not _is_number(value):
        _fail(where, f"{section}.{name} must be a finite number or null, got {value!r}")
    if name == "dice" and not 0 <= value <= 1:
        _fail(where, f"{section}.dice must be in [0, 1] (a fraction, not %), got {value!r}")
    if name == "average_hausdorff_mm" and value < 0:
        _fail(where, f"{section}.average_hausdorff_mm must be >= 0, got {value!r}")


def _check_metrics(where: str, metrics, field: str = "metrics", sections: Sequence[str] = METRIC_SECTIONS,
                   required: Sequence[str] = ("calcium",)) -> None:
    if not isinstance(metrics, Mapping):
        _fail(where, f"{field} must be an object {{section: {{dice, average_hausdorff_mm}}}}, got {metrics!r}")
    for section in required:
        if section not in metrics:
            _fail(where, f"{field} has no {section!r} section")
    unknown = sorted(set(metrics) - set(sections))
    if unknown:
        _fail(where, f"{field} has unknown section(s) {', '.join(unknown)}; valid: {', '.join(sections)}")
    for section, values in metrics.items():
        if not isinstance(values, Mapping):
            _fail(where, f"{field}.{section} must be an object with {' and '.join(METRIC_NAMES)}, got {values!r}")
        if set(values) != set(METRIC_NAMES):
            _fail(where, f"{field}.{section} must have exactly the keys {', '.join(METRIC_NAMES)}, "
                         f"got {', '.join(sorted(values)) or 'none'}")
        for name in METRIC_NAMES:
            _check_metric(where, f"{field}.{section}", name, values[name])


def validate_result(record: Any, where: str = "result") -> dict:
    """Check one results.jsonl record against the schema (docs/grid_and_report.md#resultsjsonl); return it with
    `val_calcium_dice` filled in (null when left out) and `lam` as float. `InputError` naming `where` and the field
    otherwise."""
    if not isinstance(record, Mapping):
        _fail(where, f"expected a JSON object, got {type(record).__name__}")
    missing = [f for f in RESULT_FIELDS if f not in record and f not in OPTIONAL_FIELDS]
    if missing:
        _fail(where, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(set(record) - set(RESULT_FIELDS))
    if unknown:
        _fail(where, f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(RESULT_FIELDS)}")
    record = {**record}
    for field in OPTIONAL_FIELDS:
        record.setdefault(field, None)
    if record["settings"] is not None and not isinstance(record["settings"], Mapping):
        _fail(where, "settings must be an object of TrainConfig fields or null, got "
                     f"{type(record['settings']).__name__}")
    for field in ("run_id", "run_dir", "package_version", "finished_utc"):
        if not isinstance(record[field], str) or not record[field].strip():
            _fail(where, f"{field} must be a non-empty string, got {record[field]!r}")
    for field, choices in (("arch", ARCHS), ("backbone", BACKBONES), ("scheme", SCHEMES)):
        if record[field] not in choices:
            _fail(where, f"{field} {record[field]!r} is unknown; valid: {', '.join(choices)}")
    if record["backbone"] != "none" and record["arch"] != "deeplabv3":
        _fail(where, f"backbone {record['backbone']!r} only applies to arch deeplabv3, not {record['arch']}")
    for field in ("repeat", "fold", "seed"):
        if not _is_int(record[field]) or record[field] < 0:
            _fail(where, f"{field} must be an integer >= 0, got {record[field]!r}")
    lam = record["lam"]
    if record["scheme"] == "multitask":
        if not _is_number(lam) or lam < 0:
            _fail(where, f"lam must be a finite number >= 0 for scheme multitask, got {lam!r}")
        record["lam"] = float(lam)
    elif lam is not None:
        _fail(where, f"lam must be null for scheme {record['scheme']} (only multitask weights its losses), "
                     f"got {lam!r}")
    transfer = record["pretrain_transfer"]
    if transfer is not None and (record["scheme"] != "pretrain" or transfer not in PRETRAIN_TRANSFERS):
        _fail(where, f"pretrain_transfer must be null or, for scheme pretrain, one of {', '.join(PRETRAIN_TRANSFERS)}; "
                     f"got {transfer!r} for scheme {record['scheme']}")
    if record["selection_metric"] is not None and record["selection_metric"] not in SELECTION_METRICS:
        _fail(where, f"selection_metric {record['selection_metric']!r} is unknown; valid: "
                     f"{', '.join(SELECTION_METRICS)}")
    if not _is_number(record["wall_time_s"]) or record["wall_time_s"] < 0:
        _fail(where, f"wall_time_s must be a finite number >= 0, got {record['wall_time_s']!r}")
    try:
        datetime.datetime.fromisoformat(record["finished_utc"].replace("Z", "+00:00"))
    except ValueError:
        _fail(where, f"finished_utc {record['finished_utc']!r} is not an ISO 8601 time")
    val = record["val_calcium_dice"]
    if val is not None and (not _is_number(val) or not 0 <= val <= 1):
        _fail(where, f"val_calcium_dice must be a number in [0, 1] or null, got {val!r}")
    _check_metrics(where, record["metrics"])
    if record["baselines"] is not None:
        _check_metrics(where, record["baselines"], "baselines", BASELINES, required=())
    return record


def run_key(record: Mapping) -> tuple:
    """The identity of a run: (arch, backbone, scheme, lam, repeat, fold, seed)."""
    return (record["arch"], record["backbone"], record["scheme"], record["lam"], record["repeat"], record["fold"],
            record["seed"])


def read_results(path: str | Path) -> list[dict]:
    """Every record of a results.jsonl file, validated (`validate_result`), in file order.

    A line that is not valid JSON or breaks the schema, a repeated run_id or run identity, or a file without
    records is an `InputError` naming the file and line number; nothing is skipped except blank lines.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such results file (the grid runner, python -m ivus_tf.grid, writes it)")
    records, ids, keys = [], {}, {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            record = validate_result(record, where)
            if record["run_id"] in ids:
                _fail(where, f"run_id {record['run_id']!r} already on line {ids[record['run_id']]}")
            key = run_key(record)
            if key in keys:
                _fail(where, f"run {record['run_id']!r} repeats the run on line {keys[key]} (same arch, backbone, "
                             "scheme, lam, repeat, fold and seed); it would count twice")
            ids[record["run_id"]], keys[key] = number, number
            records.append(record)
    if not records:
        raise InputError(f"{path}: holds no results")
    return records


def resolve_run_dir(record: Mapping, results_path: str | Path) -> Path:
    """The run folder of `record`: `run_dir` as is when absolute, else relative to results.jsonl's folder."""
    run_dir = Path(record["run_dir"]).expanduser()
    return run_dir if run_dir.is_absolute() else Path(results_path).parent / run_dir


# ---------------------------------------------------------------------------------------- writing (grid runner)

def metrics_from_run(metrics_json: Mapping) -> dict:
    """The `metrics` field from a run's metrics.json content (`ivus_tf.evaluation.evaluate_model`): the test-frame
    mean Dice and average Hausdorff distance of every section it holds (NaN/None stays None)."""
    out = {}
    for section in METRIC_SECTIONS:
        if section in metrics_json:
            summary = metrics_json[section]["summary"]
            out[section] = {}
            for name in METRIC_NAMES:
                value = summary[name]["mean"]
                out[section][name] = None if value is None or not math.isfinite(value) else float(value)
    return out


def baselines_from_run(metrics_json: Mapping) -> dict | None:
    """The `baselines` field from a run's metrics.json content: the test calcium mean Dice and average Hausdorff
    distance of each baseline it holds (calcium["rule_baseline"]["summary"], calcium["predict_nothing_baseline"]),
    or None when it holds none."""
    calcium = metrics_json.get("calcium") or {}
    out = {}
    for name in BASELINES:
        found = calcium.get(f"{name}_baseline")
        if found:
            summary = found.get("summary", found)  # predict_nothing_baseline is a summary itself
            out[name] = {metric: _finite_or_none(summary[metric]["mean"]) for metric in METRIC_NAMES}
    return out or None


def _finite_or_none(value) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def validation_calcium_dice(metrics_json: Mapping) -> float | None:
    """The best validation calcium Dice (per frame or pooled) of the run's last phase (metrics.json "selection"), or
    None when the run did not select on it."""
    selection = metrics_json.get("selection") or {}
    values = [phase.get("value") for phase in selection.values()
              if phase.get("monitor") in ("val_calcium_frame_dice", "val_calcium_dice")]
    value = values[-1] if values else None
    return float(value) if _is_number(value) else None


def make_result_line(*, run_id: str, arch: str, backbone: str, scheme: str, lam: float | None, repeat: int,
                     fold: int, seed: int, metrics: Mapping, run_dir: str | Path, wall_time_s: float,
                     finished_utc: str | None = None, package_version: str | None = None,
                     val_calcium_dice: float | None = None, baselines: Mapping | None = None,
                     settings: Mapping | None = None, pretrain_transfer: str | None = None,
                     selection_metric: str | None = None) -> str:
    """One results.jsonl line (ending in a newline) for a finished run, validated like the reader validates it.

    `metrics` is the compact form (`metrics_from_run(metrics_json)`), `baselines` likewise (`baselines_from_run`);
    `settings` the run's `ivus_tf.grid.runner.run_settings`; `finished_utc` defaults to now (UTC),
    `package_version` to this package's version. Raises `InputError` for a record the report would refuse.
    """
    from ivus_tf.core.version import __version__

    if finished_utc is None:
        finished_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"run_id": run_id, "arch": arch, "backbone": backbone, "scheme": scheme,
              "lam": None if lam is None else float(lam) if _is_number(lam) else lam,
              "repeat": repeat, "fold": fold, "seed": seed, "metrics": {k: dict(v) for k, v in metrics.items()},
              "pretrain_transfer": pretrain_transfer, "selection_metric": selection_metric,
              "val_calcium_dice": val_calcium_dice,
              "baselines": None if baselines is None else {k: dict(v) for k, v in baselines.items()},
              "run_dir": str(run_dir), "wall_time_s": wall_time_s,
              "finished_utc": finished_utc, "package_version": package_version or __version__,
              "settings": None if settings is None else dict(settings)}
    validate_result(record, f"result of run {run_id!r}")
    return json.dumps(record, allow_nan=False) + "\n"

