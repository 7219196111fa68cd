"""`RunProgress`: while a grid run trains, a console line at most every N seconds with its epoch and ETA.

The run's own output goes to its log file; the grid's console would otherwise stay silent for the hours a
full-size run takes. Epochs count over the run's phases (pretrain: wall-lumen epochs, then calcium epochs); the
ETA is the epochs left times the mean epoch time of this session (validation included, evaluation not), an upper
bound when early stopping ends a phase sooner.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence

from ivus_tf.core.tf_import import import_tensorflow

import_tensorflow()  # quietly, before Keras imports it
import keras  # noqa: E402


def clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class RunProgress(keras.callbacks.Callback):
    """Log `<tag>: epoch k/N (phase P), elapsed T, ETA E` at the first epoch end, then at most every
    `interval_s` seconds, and at the run's last epoch. `phases`: the run's (name, epochs), in order."""

    def __init__(self, tag: str, phases: Sequence[tuple[str, int]], log: Callable[[str], None],
                 interval_s: float = 60.0):
        super().__init__()
        self.tag, self.phases, self.log, self.interval_s = tag, list(phases), log, interval_s
        self.total = sum(epochs for _, epochs in self.phases)
        self.started = time.perf_counter()
        self.session_start = self.last_line = None
        self.session_epochs = 0
        self.phase, self.offset = self.phases[0][0], 0

    def on_train_begin(self, logs=None):
        offset = 0
        for name, epochs in self.phases:  # the model of phase P is named <arch>_<P>
            if self.model.name.endswith(f"_{name}"):
                self.phase, self.offset = name, offset
            offset += epochs

    def on_epoch_begin(self, epoch, logs=None):
        if self.session_start is None:
            self.session_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.session_epochs += 1
        done = self.offset + epoch + 1
        if self.last_line is not None and now - self.last_line < self.interval_s and done < self.total:
            return
        self.last_line = now
        per_epoch = (now - self.session_start) / self.session_epochs
        self.log(f"{self.tag}: epoch {done}/{self.total} (phase {self.phase}), elapsed {clock(now - self.started)}, "
                 f"ETA {clock((self.total - done) * per_epoch)}")
