"""Keras callbacks of a training phase: the NaN guard and the per-epoch selection + checkpoint.

`FiniteLossGuard` stops the run at the first batch whose loss is NaN or infinite, with a message naming the phase,
epoch and step and the last good checkpoint. It raises (`TrainingError`) instead of setting `stop_training`: Keras
would still run validation and `on_epoch_end`, and the poisoned weights must never reach a checkpoint. The loss
Keras reports per batch is the running mean over the epoch, so the first non-finite value is the poisoned step.

`PhaseCheckpoint` does at every epoch end what `ModelCheckpoint(save_best_only)`, `EarlyStopping` and
`BackupAndRestore` do together, with state that survives a restart (`ivus_tf.training.state`): Keras's own
`EarlyStopping` forgets its best value and patience counter when `fit` starts again, and `BackupAndRestore`
keeps weights and the epoch only. The selection metric is higher-is-better (validation Dice); an epoch improves
on the best when its value is strictly larger (a NaN never does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ivus_tf.core.tf_import import import_tensorflow

import_tensorflow()  # quietly, before Keras imports it
import keras  # noqa: E402

from ivus_tf.run_folder import PhaseFolder  # noqa: E402
from ivus_tf.training.state import PhaseState, save_model_atomic, save_weights_atomic, write_state  # noqa: E402


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback without its `evaluation_<metric>_vs_iterations` scalars: after every validation
    Keras 3 writes each validation metric a second time against the optimizer step (`on_test_end`), which doubles
    the tags of the Scalars dashboard; `validation/epoch_<metric>` holds the same values per epoch."""

    def on_test_end(self, logs=None):
        super().on_test_end({})  # what Keras does after validating, with nothing to write again


def poly_learning_rate(initial: float, epochs: int, exponent: float = 0.9) -> Callable[[int], float]:
    """nnU-Net's polynomial decay as a function of the 0-based epoch: `initial * (1 - epoch / epochs) ** exponent`."""
    def rate(epoch: int, _current=None) -> float:
        return float(initial * (1.0 - min(epoch, epochs) / epochs) ** exponent)
    return rate


def learning_rate_callbacks(schedule: str, initial: float, epochs: int) -> list:
    """The Keras callbacks that apply `schedule` over a phase of `epochs` epochs (none for `constant`). The rate
    depends only on the epoch index, so a resumed phase continues on the same curve."""
    if schedule == "constant":
        return []
    if schedule == "poly":
        return [keras.callbacks.LearningRateScheduler(poly_learning_rate(initial, epochs))]
    raise ValueError(f"unknown lr_schedule {schedule!r}")


HEADLINE_METRICS = ("loss", "calcium_dice", "wall_lumen_dice")


def epoch_line(epoch: int, epochs: int, seconds: float, logs: dict) -> str:
    """One short line per epoch for logs and files: the loss and each task's Dice, for training and validation
    (per-class Dice and per-task losses stay in TensorBoard and state.json)."""
    def part(prefix: str) -> str:
        return ", ".join(f"{name} {float(logs[prefix + name]):.4f}" for name in HEADLINE_METRICS
                         if prefix + name in logs)

    text = f"epoch {epoch + 1}/{epochs} ({seconds:.0f} s): {part('')}"
    return text + (f"; val: {part('val_')}" if part("val_") else "")


class EpochLine(keras.callbacks.Callback):
    """`log(epoch_line(...))` at every epoch end: what a run prints when its output is not a terminal."""

    def __init__(self, epochs: int, log: Callable[[str], None] = print):
        super().__init__()
        self.epochs, self.log, self.started = epochs, log, time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.log(epoch_line(epoch, self.epochs, time.perf_counter() - self.started, logs or {}))


class TrainingError(RuntimeError):
    """Training failed (a non-finite loss); the message is one line saying where and what was kept."""


class FiniteLossGuard(keras.callbacks.Callback):
    """Raise `TrainingError` when a batch's loss is not finite."""

    def __init__(self, phase: str, epochs: int, steps_per_epoch: int, files: PhaseFolder):
        super().__init__()
        self.phase, self.epochs, self.steps = phase, epochs, steps_per_epoch
        self.files = files
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        last = self.files.last_weights
        kept = (f"the last good checkpoint {last} (after epoch {self.epoch}) is kept and a restart resumes from it"
                if self.epoch > 0 and last.is_file() else "no epoch had finished, so no checkpoint was written")
        raise TrainingError(
            f"phase {self.phase}: loss became {float(loss)} at epoch {self.epoch + 1}/{self.epochs}, step "
            f"{batch + 1}/{self.steps} (global step {self.epoch * self.steps + batch + 1}); training stopped, {kept}; "
            "check the input data for NaN/inf values or lower the learning rate")


class PhaseCheckpoint(keras.callbacks.Callback):
    """Per epoch: select (best `monitor`), count patience, save best.keras / last.weights.h5 / state.json.

    `snapshot()` returns the model to save as best.keras (an uncompiled twin holding the current weights, so the
    selected model carries no optimizer state). `frozen` says which optimizer (frozen-encoder stage or not) the
    checkpoint's optimizer state belongs to.
    """

    def __init__(self, files: PhaseFolder, monitor: str, epochs: int, patience: int, state: PhaseState,
                 snapshot: Callable[[], keras.Model], frozen: bool, log: Callable[[str], None] = print):
        super().__init__()
        self.files, self.monitor, self.epochs, self.patience = files, monitor, epochs, patience
        self.state, self.snapshot, self.frozen, self.log = state, snapshot, frozen, log

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if self.monitor not in logs:
            raise KeyError(f"{self.monitor} not in the epoch logs ({', '.join(sorted(logs))})")
        value = logs[self.monitor]
        state = self.state
        improved = math.isfinite(value) and (state.best is None or value > state.best)
        if improved:
            state.best, state.best_epoch, state.wait = value, epoch, 0
            save_model_atomic(self.snapshot(), self.files.best_model)
        else:
            state.wait += 1
        state.epoch, state.frozen = epoch + 1, self.frozen
        state.history.append({"epoch": epoch + 1, **logs})
        stop = self.patience > 0 and state.wait >= self.patience
        state.done = stop or state.epoch >= self.epochs
        state.stopped_early = stop and state.epoch < self.epochs
        save_weights_atomic(self.model, self.files.last_weights)
        write_state(self.files, state)
        best = f"{state.best:.4f} at epoch {state.best_epoch + 1}" if state.best is not None else "none yet"
        note = " (new best, saved)" if improved else ""
        self.log(f"  {self.monitor} {value:.4f}{note}; best {best}")
        if state.stopped_early:
            self.log(f"  early stop: no better {self.monitor} for {state.wait} epochs")
            self.model.stop_training = True
