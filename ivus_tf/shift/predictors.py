"""What the shift test scores: a trained model (run folder, .keras file or export) and the floors beside it.

A predictor maps a batch of records frames (`ivus_tf.data.records.iterate_frames` dicts, one frame size per batch)
to one {"calcium": 0/1 mask or None, "wall_lumen": 0/1/2 labels or None} per frame at the frame's original size.

Models run through the serving graph (`ivus_tf.export.serving`): raw uint8 frames resized to the model's input
with the training pipeline's convention, softmax probabilities resized back to the frame's size, argmax. That is
the graph an export runs in `predict` and the convention `ivus_tf.evaluation` scores test cases with, so a run
folder, its `.keras` file and its export give the same masks (up to float rounding).

The floors: `predict_nothing` (all background; its calcium Dice is the share of calcium-free frames) and the
calcium rule baseline (`rule_baseline`, fitted on the model's training cases; calcium only, so its arc is seen
from the image centre, where the catheter is).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.export.layout import MASK_OUTPUTS
from ivus_tf.run_folder import RunFolder

Predictor = Callable[[Sequence[Mapping]], list]

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
        return [{task: (np.asarray(outputs[MASK_OUTPUTS[task]][i]) if task in tasks else None)
                 for task in MASK_OUTPUTS} for i in range(len(frames))]

    return predict


def load_model_under_test(path, engine: str = "auto") -> ModelUnderTest:
    """A training run folder (RUN_DIR/model.keras, with config.yaml), a `.keras` file, or an export folder
    (`ivus_tf.export`; NAME or NAME/V, run on `engine`); `InputError` naming `path` for anything else."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such run folder, .keras file or export folder")
    if (path.is_dir() and RunFolder(path).model_path.is_file()) or (path.is_file() and path.suffix == ".keras"):
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
        raise InputError(f"{path}: neither a training run folder (no {RunFolder(path).model_path.name}) nor an "
                         "ivus-tf export (no "
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


def _recorded_rule(model: ModelUnderTest) -> dict | None:
    """The rule a training run fitted on its calcium training cases (metrics.json `calcium.rule_baseline`)."""
    path = RunFolder(model.run_dir).metrics_path if model.run_dir is not None else None
    if path is None or not path.is_file():
        return None
    rule = json.loads(path.read_text(encoding="utf-8")).get("calcium", {}).get("rule_baseline")
    if not rule or "params" not in rule:
        return None
    return {"source": f"fitted by the training run on its calcium training cases ({path})",
            "params": rule["params"], "fitted_on": rule.get("fitted_on")}


def _fit_rule(model: ModelUnderTest, log) -> dict:
    """Fit the rule now on the calcium training cases of the run's records and splits, or say why it cannot be."""
    training = model.training or {}
    data, splits = training.get("data"), training.get("splits")
    if not data or not splits:
        return {"reason": "the model does not record its training data (a bare .keras file?)"}
    if not (Path(data) / "index.json").is_file() or not Path(splits).is_file():
        return {"reason": f"the model's training records {data} or splits {splits} are not on this machine"}
    from ivus_tf.evaluation import rule_baseline as fit_and_score
    from ivus_tf.splits import fold_cases, read_splits

    train = fold_cases(read_splits(splits), int(training.get("repeat") or 0), int(training.get("fold") or 0),
                       "calcium")[0]
    fitted = fit_and_score(data, train, [])
    on = fitted["fitted_on"]
    log(f"rule baseline: fitted on {on['frames']} calcium frames of {len(on['case_ids'])} training cases in "
        f"{fitted['seconds']:.0f} s (training Dice {on['mean_dice']:.3f})")
    return {"source": f"fitted now on the calcium training cases of {data}", "params": fitted["params"],
            "fitted_on": on}


def rule_baseline(model: ModelUnderTest, log=print) -> tuple[Predictor | None, dict]:
    """(predictor or None, what shift.json records about it): the calcium rule (`ivus_tf.baselines`: bright
    leading edge + acoustic shadow) with the thresholds fitted on the model's calcium training cases, as the run
    recorded them in metrics.json, else fitted now on the records and splits its config names. Not available
    (None, and the reason) without either, e.g. for a bare .keras file or when the training records are gone."""
    from ivus_tf.baselines import RuleParams, predict_calcium

    found = _recorded_rule(model) or _fit_rule(model, log)
    if "params" not in found:
        return None, {"available": False, **found}
    params = RuleParams.from_dict(found["params"], found["source"])

    def predict(frames: Sequence[Mapping]) -> list:
        return [{"calcium": predict_calcium(f["image"], f["pixel_spacing_mm"], params).astype(np.uint8),
                 "wall_lumen": None} for f in frames]

    return predict, {"available": True, **found}
