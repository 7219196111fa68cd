"""The three training schemes of Bargsten et al. (CDBME 2021), as data: each is a sequence of phases.

1. `calcium`: one phase, the calcium head only, trained on calcium-labelled frames.
2. `pretrain`: phase `wall_lumen` trains a wall-lumen model (lumen / vessel wall) on wall-lumen frames; phase
   `calcium` then builds a calcium model, copies into it what the selected wall-lumen model learned
   (`ivus_tf.models.transfer_weights`, `pretrain_transfer`: every weight but the classifier by default, or the
   encoder only) and fine-tunes on calcium frames, the whole network trainable unless `freeze_encoder_epochs`
   keeps the encoder frozen for the first epochs.
3. `multitask`: one phase, a shared encoder with both heads, batches mixing calcium and wall-lumen frames
   (`calcium_fraction`), loss `lam * L_calcium + L_wall_lumen`.

Every phase selects its model by the best validation Dice of its `monitor_task` (calcium, or for wall-lumen
pre-training the mean Dice of lumen and vessel wall), per frame or pooled (`selection_metric`), with early stopping,
and is checkpointed and logged under its own name (`checkpoints/<phase>/`, `tb/<phase>/`). The last phase's selected
model is the run's model.

`check_data` says, before anything trains, whether the records and the split give every phase what it needs.
This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import CALCIUM, WALL_LUMEN
from ivus_tf.splits import fold_cases
from ivus_tf.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `fit` of one model: heads `tasks`, selected on the validation Dice of `monitor_task`."""

    name: str
    tasks: tuple[str, ...]
    monitor_task: str
    epochs: int
    lam: float = 1.0
    freeze_encoder_epochs: int = 0
    weights_from: str | None = None  # the earlier phase whose selected model initialises this one
    transfer: str = "all_but_classifier"  # what it takes from it (`ivus_tf.models.transfer_weights` scope)
    selection_metric: str = "per_frame_dice"

    @property
    def monitor(self) -> str:
        """The Keras log key of the selection metric (`ivus_tf.keras_metrics.task_dice_metrics`)."""
        kind = "frame_dice" if self.selection_metric == "per_frame_dice" else "dice"
        return f"val_{self.monitor_task}_{kind}"


def calcium_phases(config: TrainConfig) -> tuple[Phase, ...]:
    return (Phase(CALCIUM, (CALCIUM,), CALCIUM, config.epochs, selection_metric=config.selection_metric),)


def pretrain_phases(config: TrainConfig) -> tuple[Phase, ...]:
    return (Phase(WALL_LUMEN, (WALL_LUMEN,), WALL_LUMEN, config.wall_lumen_epochs,
                  selection_metric=config.selection_metric),
            Phase(CALCIUM, (CALCIUM,), CALCIUM, config.epochs,
                  freeze_encoder_epochs=min(config.freeze_encoder_epochs, config.epochs), weights_from=WALL_LUMEN,
                  transfer=config.pretrain_transfer, selection_metric=config.selection_metric))


def multitask_phases(config: TrainConfig) -> tuple[Phase, ...]:
    return (Phase("multitask", (CALCIUM, WALL_LUMEN), CALCIUM, config.epochs, lam=config.lam,
                  selection_metric=config.selection_metric),)


SCHEME_PHASES: dict[str, Callable[[TrainConfig], tuple[Phase, ...]]] = {  # keys: ivus_tf.core.vocab.SCHEMES
    "calcium": calcium_phases,
    "pretrain": pretrain_phases,
    "multitask": multitask_phases,
}


def phases_of(config: TrainConfig) -> tuple[Phase, ...]:
    """The phases of `config.scheme`."""
    if config.scheme not in SCHEME_PHASES:
        raise InputError(f"unknown scheme {config.scheme!r}; valid: {', '.join(SCHEME_PHASES)}")
    return SCHEME_PHASES[config.scheme](config)


@dataclasses.dataclass(frozen=True)
class PhaseCases:
    """Case ids a phase trains and validates on (only cases carrying the labels it uses)."""

    train: list[str]
    val: list[str]


def check_data(config: TrainConfig, phases: tuple[Phase, ...], splits: Mapping, records_dir,
               splits_path) -> tuple[dict[str, PhaseCases], list[str]]:
    """({phase name: PhaseCases}, test case ids carrying calcium labels), or `InputError` saying what is missing.

    The records must hold every label a scheme uses (`pretrain`, `multitask`: calcium and wall-lumen); the split's
    training cases must carry every task of each phase, its validation fold the monitored task, and its test
    set calcium labels.
    """
    carried = {task for tasks in splits["case_tasks"].values() for task in tasks}
    needed = sorted({task for phase in phases for task in phase.tasks})
    missing = [task for task in needed if task not in carried]
    if missing:
        raise InputError(f"{records_dir}: scheme {config.scheme} needs {' and '.join(needed)} labels, but no case "
                         f"carries {' or '.join(missing)} labels (cases carry: {', '.join(sorted(carried))})")
    where = f"{splits_path}: repeat {config.repeat} fold {config.fold}"
    cases = {}
    for phase in phases:
        train = sorted({c for task in phase.tasks for c in fold_cases(splits, config.repeat, config.fold, task)[0]})
        for task in phase.tasks:
            if not fold_cases(splits, config.repeat, config.fold, task)[0]:
                raise InputError(f"{where} leaves no training case with {task} labels for phase {phase.name}; "
                                 "use more cases or fewer folds")
        val = fold_cases(splits, config.repeat, config.fold, phase.monitor_task)[1]
        if not val:
            raise InputError(f"{where} leaves the validation fold without a case with {phase.monitor_task} labels "
                             f"(phase {phase.name} selects its model on it); use more cases or fewer folds")
        val = sorted({c for task in phase.tasks for c in fold_cases(splits, config.repeat, config.fold, task)[1]})
        cases[phase.name] = PhaseCases(train, val)
    test = fold_cases(splits, config.repeat, config.fold, CALCIUM)[2]
    if not test:
        raise InputError(f"{splits_path}: the test set holds no case with calcium labels; raise test_fraction or "
                         "use more cases")
    return cases, test
