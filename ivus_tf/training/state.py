"""What a run keeps on disk to resume a phase (`ivus_tf.run_folder.PhaseFolder`): the last epoch's weights with
the optimizer state (Keras 3 `save_weights` includes a compiled model's optimizer variables), `PhaseState` as
state.json, and the selected model so far as best.keras.

Every file is written under a temporary name and renamed, state.json last: a run killed at any moment leaves the
previous epoch's consistent trio. The phase order of a scheme is fixed, so the phase to resume is the first one
whose state is not done.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ivus_tf.core.atomic import atomic_file, atomic_write_json
from ivus_tf.run_folder import PhaseFolder


@dataclasses.dataclass
class PhaseState:
    """Resumable state of one phase. `epoch` counts finished epochs (the next one to run, 0-based).

    `best`/`best_epoch`/`wait` are the early-stopping state (best validation Dice, its 0-based epoch, epochs since);
    `frozen` says whether the optimizer state in last.weights.h5 belongs to the frozen-encoder stage; `history`
    holds every finished epoch's logs (floats), for the summary and the tests.
    """

    epoch: int = 0
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    frozen: bool = False
    done: bool = False
    stopped_early: bool = False
    history: list = dataclasses.field(default_factory=list)


def read_state(phase: PhaseFolder) -> PhaseState:
    """The saved state of a phase, or a fresh one when the phase never finished an epoch."""
    path = phase.state
    if not path.is_file():
        return PhaseState()
    data = json.loads(path.read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(PhaseState)}
    return PhaseState(**{k: v for k, v in data.items() if k in fields})


def write_state(phase: PhaseFolder, state: PhaseState) -> None:
    """Write state.json atomically; NaN and infinities (a diverged epoch's logs) as null."""
    atomic_write_json(phase.state, dataclasses.asdict(state))


def save_weights_atomic(model, path: Path) -> None:
    """`model.save_weights` (optimizer state included) to a temporary name, then rename."""
    with atomic_file(path) as tmp:
        model.save_weights(str(tmp), overwrite=True)


def save_model_atomic(model, path: Path) -> None:
    """`model.save` (.keras) to a temporary name, then rename."""
    with atomic_file(path) as tmp:
        model.save(str(tmp), overwrite=True)
