"""How predict streams a pullback: batches of frames, the model, and per-frame work, overlapped and in order.

    reader thread:  decode frames, cut them into batches        -> queue of at most `prefetch` batches
    calling thread: the model on one batch (TensorFlow and ONNX Runtime release the GIL while they compute)
    writer threads: `work(frame, outputs)` per frame (clean the masks, measure, encode and write the PNGs)
    calling thread: takes the finished frames back IN FRAME ORDER (the CSV, the report's accumulators)

With `threads=0` everything runs in the calling thread, one step after the other (the sequential path); both
paths call the same functions in the same order per frame, so their outputs are byte-identical. Memory stays
constant: at most `prefetch` batches wait for the model and `max_pending` frames for their writers, whatever the
pullback's length (the raw frames waiting are small next to the activations of the batch in the model, which the
memory guard `ivus_tf.pullback.batching.BatchLimit` sizes). An error anywhere (a frame that cannot be decoded, a
PNG that cannot be written) stops the reader and the writers, waits for the running ones to finish, and is raised
in the calling thread as the one
exception it was (non-`InputError`s of `work` become an `InputError` naming the frame), so the caller's
temporary output folder can be removed with nothing still writing into it.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.export.layout import MASK_OUTPUTS
from ivus_tf.pullback.batching import BatchLimit, batches
from ivus_tf.pullback_io import Frame, Warnings

DEFAULT_IO_THREADS = 2
PREFETCH_BATCHES = 2
_END = object()


def infer_batch(model, batch: Sequence[Frame], tasks: Sequence[str], where: str = "model") -> list[dict]:
    """The model's outputs for one batch of equal-size frames, split per frame: [{output name: array}, ...]."""
    names = [MASK_OUTPUTS[task] for task in tasks]
    stack = np.stack([frame.image for frame in batch])
    outputs = model.predict(stack, batch_size=len(batch))
    for name in names:
        if name not in outputs:
            raise InputError(f"{where}: the model gave no {name!r} output (it gave {sorted(outputs)})")
        shape = tuple(np.shape(outputs[name]))
        if shape != stack.shape:
            raise InputError(f"{where}: output {name!r} has shape {shape} for frames of shape {stack.shape}")
    extra = [f"{task}_uncertainty{suffix}" for task in tasks for suffix in ("", "_mean")]
    arrays = {name: np.asarray(outputs[name]) for name in names + [n for n in extra if n in outputs]}
    return [{name: array[i] for name, array in arrays.items()} for i in range(len(batch))]


def predict_frames(model, frames: Iterable[Frame], batch_size: int, tasks: Sequence[str], where: str = "model",
                   memory_budget_bytes: int | None = None, memory_total_bytes: int | None = None,
                   warnings: Warnings | None = None) -> Iterator[tuple[Frame, dict]]:
    """Yield (frame, {output name: [H, W] array}) for each frame, predicting `batch_size` frames per call.

    The memory guard (`ivus_tf.pullback.batching.BatchLimit`): a batch of large frames is cut to what fits in
    `memory_budget_bytes` (default half of `memory_total_bytes`, default this machine's memory), with one warning
    per frame size; a frame that alone needs more than the whole memory is refused."""
    warnings = warnings or Warnings()
    limit = BatchLimit(model, batch_size, warnings.once, memory_budget_bytes, memory_total_bytes)
    for batch in batches(frames, batch_size, limit):
        yield from zip(batch, infer_batch(model, batch, tasks, where))


def _guarded(work: Callable[[Frame, dict], object], frame: Frame, outputs: dict):
    """`work(frame, outputs)`, with any failure but an `InputError` turned into one naming the frame."""
    try:
        return work(frame, outputs)
    except InputError:
        raise
    except Exception as error:  # cv2.error, OSError (disk full), ...: one line that names the frame
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"{frame.source}: writing the outputs of frame {frame.name} failed: {detail}") from error


class _Reader:
    """A thread filling a bounded queue with batches (an error it meets goes into the queue in its place);
    `close` stops it and waits for it."""

    def __init__(self, frames: Iterable[Frame], batch_size: int, prefetch: int, limit=None):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(frames, batch_size, limit), name="predict-reader")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, frames, batch_size, limit) -> None:
        try:
            for batch in batches(frames, batch_size, limit):
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the calling thread, raised there
            self._put(error)

    def __iter__(self) -> Iterator[list[Frame]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class FrameStream:
    """`with FrameStream(frames, batch_size, infer, work, threads) as stream: for frame, result in stream: ...`

    `infer(batch) -> [outputs per frame]` runs in the calling thread; `work(frame, outputs) -> result` in the
    writer threads (or inline with `threads=0`); results come back in frame order (module docstring)."""

    def __init__(self, frames: Iterable[Frame], batch_size: int, infer: Callable[[list[Frame]], list[dict]],
                 work: Callable[[Frame, dict], object], threads: int = DEFAULT_IO_THREADS,
                 prefetch: int = PREFETCH_BATCHES, max_pending: int | None = None, limit=None):
        if int(threads) < 0:
            raise InputError(f"--io-threads must be >= 0, got {threads}")
        self.frames, self.batch_size, self.infer, self.work = frames, int(batch_size), infer, work
        self.limit = limit  # the memory guard: batch size per frame shape (`BatchLimit`), called by the reader
        self.threads, self.prefetch = int(threads), int(prefetch)
        self.max_pending = max_pending or max(2 * self.batch_size, 2 * self.threads)
        self._reader = self._pool = None

    def __enter__(self) -> FrameStream:
        if self.threads > 0:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="predict-writer")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._pool is not None:  # cancel what has not started, wait for what has: nothing writes after this
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[Frame, object]]:
        if self._pool is None:
            for batch in batches(self.frames, self.batch_size, self.limit):
                for frame, outputs in zip(batch, self.infer(batch)):
                    yield frame, _guarded(self.work, frame, outputs)
            return
        self._reader = _Reader(self.frames, self.batch_size, self.prefetch, self.limit)
        pending: collections.deque = collections.deque()
        batches_read = iter(self._reader)
        while True:
            try:
                batch = next(batches_read)
            except StopIteration:
                break
            except BaseException:  # a frame that cannot be read: the frames before it first, as sequentially
                while pending:
                    frame, future = pending.popleft()
                    yield frame, future.result()
                raise
            for frame, outputs in zip(batch, self.infer(batch)):
                pending.append((frame, self._pool.submit(_guarded, self.work, frame, outputs)))
            while pending and (pending[0][1].done() or len(pending) > self.max_pending):
                frame, future = pending.popleft()
                yield frame, future.result()
        while pending:
            frame, future = pending.popleft()
            yield frame, future.result()
