"""What the shift test scores: a trained model (run folder, .keras file or export) and the floors beside it.

A predictor maps a batch of records frames (`ivus_tf.data.records.iterate_frames` dicts, one frame size per batch)
to one {"calcium": 0/1 mask or None, "wall_lumen": 0/1/2 labels or None} per frame at the frame's original size.

Models run through the serving graph (`ivus_tf.export.serving`): raw uint8 frames resized to the model's input
with the training pipeline's convention, softmax probabilities resized back to the frame's size, argmax. That is
the graph an export runs in `predict` and the convention `ivus_tf.evaluation` scores test cases with, so a run
folder, its `.keras` file and its export give the same masks (up to float rounding).

The floors: `predict_nothing` (all background; its calcium Dice is the share of calcium-free frames) and the
calcium rule baseline (`rule_baseline`, fitted on the model's training cases), when the package has it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ivus_tf.core.errors import InputError

Predictor = Callable[[Sequence[Mapping]], list]
OUTPUTS = {"calcium": "calcium_mask", "wall_lumen": "wall_lumen_labels"}  # task -> serving output name
MODEL_FILE, CONFIG_FILE, METRICS_FILE = "model.keras", "config.yaml", "metrics.json"

__all__ = ["ModelUnderTest", "Predictor", "load_model_under_test", "predict_nothing", "rule_baseline"]


@dataclasses.dataclass
class ModelUnderTest:
    """A predictor with what is known about where it came from.

    `kind`: "run_folder", "keras" or "export" ("stub" in tests); `training`: the run's config as a mapping (the
    flat `TrainConfig` keys of config.yaml, also recorded in an export) or None; `run_dir`: the run folder when the
    model is one (its metrics.json gives the run's own test-case numbers)."""

    predict: Predictor
    description: str
    kind: str
    tasks: tuple[str, ...]
    training: dict | None = None
    run_dir: Path | None = None


class _KerasServing:
    """A Keras model behind the export's serving graph: `predict(uint8 [N, H, W]) -> {output name: [N, H, W]}`."""

    def __init__(self, source):
        from ivus_tf.export.serving import ServingModule

        self._serve = ServingModule(source.model, source.image_size, source.tasks).serve_nhw()

    def predict(self, frames: np.ndarray, batch_size: int | None = None) -> dict:
        return {name: value.numpy() for name, value in self._serve(np.ascontiguousarray(frames)).items()}


def _model_predictor(runner, tasks: Sequence[str]) -> Predictor:
    def predict(frames: Sequence[Mapping]) -> list:
        stack = np.stack([frame["image"] for frame in frames])
        outputs = runner.predict(stack, batch_size=len(frames))
        return [{task: (np.asarray(outputs[OUTPUTS[task]][i]) if task in tasks else None) for task in OUTPUTS}
                for i in range(len(frames))]

    return predict


def load_model_under_test(path, engine: str = "auto") -> ModelUnderTest:
    """A training run folder (RUN_DIR/model.keras, with config.yaml), a `.keras` file, or an export folder
    (`ivus_tf.export`; NAME or NAME/V, run on `engine`); `InputError` naming `path` for anything else."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such run folder, .keras file or export folder")
    if (path.is_dir() and (path / MODEL_FILE).is_file()) or (path.is_file() and path.suffix == ".keras"):
        from ivus_tf.core.tf_import import import_tensorflow
        from ivus_tf.export.source import load_source

        import_tensorflow()  # before Keras imports it: keeps TensorFlow's start-up notices off the output
        source = load_source(path)
        kind = "run_folder" if path.is_dir() else "keras"
        return ModelUnderTest(_model_predictor(_KerasServing(source), source.tasks),
                              f"{path} (Keras, {source.image_size[0]}x{source.image_size[1]} input)", kind,
                              source.tasks, source.config, path if path.is_dir() else None)
    if path.is_file():
        raise InputError(f"{path}: not a .keras model file, training run folder or export folder")
    from ivus_tf.export.layout import EXTRA_DIR, INFO_NAME, find_version_dir

    if not (find_version_dir(path) / EXTRA_DIR / INFO_NAME).is_file():
        raise InputError(f"{path}: neither a training run folder (no {MODEL_FILE}) nor an ivus-tf export (no "
                         f"{EXTRA_DIR}/{INFO_NAME})")
    from ivus_tf.predict import load_model, model_tasks

    model = load_model(path, engine)
    tasks = model_tasks(model, str(path))
    return ModelUnderTest(_model_predictor(model, tasks), f"{model.path} (export, {model.engine})", "export",
                          tasks, model.info.get("config"), None)


def predict_nothing(frames: Sequence[Mapping]) -> list:
    """The predict-nothing floor: all background for every task."""
    return [{"calcium": np.zeros(f["image"].shape, np.uint8), "wall_lumen": np.zeros(f["image"].shape, np.uint8)}
            for f in frames]


def rule_baseline(model: ModelUnderTest, log=print) -> tuple[Predictor | None, dict]:
    """(predictor or None, what the JSON records about it): the calcium rule fitted on the model's training cases.

    This package version has no rule baseline (`ivus_tf.baselines`), so it is reported as not available; when it
    is added, this is the one function that fits it (or reads the fit a run recorded) and returns its predictor.
    """
    return None, {"available": False,
                  "reason": "this package version has no calcium rule baseline (ivus_tf.baselines)"}
