"""The training run folder: the contract between training (which writes it) and the grid, export and report.

    RUN_DIR/config.yaml                    the fully resolved `TrainConfig` (loadable with --config); it names the
                                           records folder (`data`) and the splits file (`splits`) the run used
    RUN_DIR/records.json                   that records folder and the fingerprint of its index.json, so a resume
                                           on rebuilt records is refused
    RUN_DIR/checkpoints/<phase>/           state.json, last.weights.h5 (weights and optimizer), best.keras
    RUN_DIR/tb/<phase>/, RUN_DIR/tb/       TensorBoard logs of each phase; the run's HParams summary
    RUN_DIR/model.keras                    the selected model of the last phase
    RUN_DIR/predictions/<case>/<frame>_<task>.png   test-set argmax maps (with `save_predictions`)
    RUN_DIR/metrics.json                   test metrics (`ivus_tf.evaluation`)
    RUN_DIR/done.json                      the run finished: when, wall time, package version

Every reader and writer takes these paths from `RunFolder` (as `keras.saving` owns the `.keras` archive), never
from literals. This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import CALCIUM, WALL_LUMEN, check_task
from ivus_tf.training.config import TrainConfig, load_config

PREDICTION_SUFFIX = {CALCIUM: "_calcium.png", WALL_LUMEN: "_wall_lumen.png"}
PREDICTION_SCALE = {CALCIUM: 255, WALL_LUMEN: 1}  # the manifest's mask formats: calcium 0/255, wall-lumen 0/1/2


def prediction_path(folder: str | os.PathLike, case_id: str, frame_id: str, task: str) -> Path:
    """`folder/<case_id>/<frame_id>_<task>.png`: where a frame's predicted `task` map is saved."""
    return Path(folder) / case_id / f"{frame_id}{PREDICTION_SUFFIX[check_task(task)]}"


@dataclasses.dataclass(frozen=True)
class PhaseFolder:
    """`RUN_DIR/checkpoints/<phase>/`: what a phase keeps to resume (`ivus_tf.training.state`)."""

    path: Path

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def last_weights(self) -> Path:
        return self.path / "last.weights.h5"

    @property
    def best_model(self) -> Path:
        return self.path / "best.keras"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """The paths of one training run (module docstring), and its config, metrics and completion record."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def records_json(self) -> Path:
        return self.path / "records.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def done_path(self) -> Path:
        return self.path / "done.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    def tb_phase_dir(self, phase: str) -> Path:
        return self.tb_dir / phase

    def phase(self, phase: str) -> PhaseFolder:
        return PhaseFolder(self.path / "checkpoints" / phase)

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def is_finished(self) -> bool:
        """Whether the run completed: done.json and metrics.json are both there."""
        return self.done_path.is_file() and self.metrics_path.is_file()

    def load_config(self) -> TrainConfig:
        """config.yaml through `TrainConfig` (relative paths in it are relative to this folder); `InputError`
        naming the file when it is missing or invalid."""
        if not self.has_config():
            raise InputError(f"{self.path}: no {self.config_path.name}; not a training run folder")
        return load_config(self.config_path)

    def records_dir(self) -> Path:
        """The records folder the run trained and was evaluated on (config `data`)."""
        config = self.load_config()
        if not config.data:
            raise InputError(f"{self.config_path}: names no records folder (key data)")
        return Path(config.data).expanduser()

    def splits_path(self) -> Path:
        """The splits file the run took its folds and test set from (config `splits`)."""
        config = self.load_config()
        if not config.splits:
            raise InputError(f"{self.config_path}: names no splits file (key splits)")
        return Path(config.splits).expanduser()

    def read_records_json(self) -> dict | None:
        """{"records": folder, "fingerprint": of its index.json} the run started on; None for a run folder of an
        older version, which has no records.json."""
        if not self.records_json.is_file():
            return None
        return _read_json(self.records_json, "records record")

    def read_metrics(self) -> dict:
        return _read_json(self.metrics_path, "metrics")

    def read_done(self) -> dict:
        return _read_json(self.done_path, "completion record")


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable {what} ({error.__class__.__name__}: {error})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value
