"""tf.distribute for one training run: `strategy: none | mirrored | multiworker` (TrainConfig field, `--strategy`).

`mirrored` spans this machine's GPUs (or, without one, its logical CPU devices: how the tests run it); `multiworker`
the machines of `TF_CONFIG`, where the chief writes the run folder and every other worker keeps its own checkpoint
copy in `<run folder>.worker-<i>`; copies at different points are a one-line error on every worker
(`check_workers_agree`) instead of a collective that waits forever. `batch_size` stays the global batch and a step
equals the single-device step on it (loss statistics summed over replicas, synchronized batch norm); the Keras
workarounds this needs live in `ivus_tf.compat`. Usage: docs/training.md#one-run-on-several-gpus-or-machines.
"""

from __future__ import annotations

import json
import os

from ivus_tf import compat
from ivus_tf.core.errors import InputError

STRATEGIES = ("none", "mirrored", "multiworker")
_CACHE: dict = {}  # MultiWorkerMirroredStrategy may be created once per process; reuse every strategy


def tf_config() -> dict:
    """The parsed `TF_CONFIG` environment variable ({} when unset)."""
    text = os.environ.get("TF_CONFIG") or ""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(f"TF_CONFIG is not valid JSON: {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {text[:80]!r}")
    return value


def worker_task() -> tuple[str, int]:
    """(type, index) of this process in the TF_CONFIG cluster; ("worker", 0) without a cluster."""
    task = tf_config().get("task") or {}
    return str(task.get("type", "worker")), int(task.get("index", 0))


def is_chief() -> bool:
    """Whether this process is the chief of its TF_CONFIG cluster (True without one): the task of type 'chief',
    or worker 0 when the cluster has no chief (MultiWorkerMirroredStrategy's convention)."""
    config = tf_config()
    if not config.get("task"):
        return True
    kind, index = worker_task()
    if "chief" in (config.get("cluster") or {}):
        return kind == "chief"
    return kind == "worker" and index == 0


def worker_run_dir(run_dir: str, strategy: str) -> str:
    """The folder this process writes a run into: `run_dir`, or `<run_dir>.worker-<i>` for a multi-worker
    non-chief (its own copy, so that every worker can resume from the same epoch)."""
    if strategy != "multiworker" or is_chief():
        return run_dir
    kind, index = worker_task()
    return f"{run_dir.rstrip('/')}.{kind}-{index}"


def _check_cluster() -> None:
    config = tf_config()
    cluster = config.get("cluster") or {}
    if not cluster or not config.get("task"):
        raise InputError("strategy multiworker needs TF_CONFIG with 'cluster' and 'task' (e.g. "
                         '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", '
                         '"index": 0}}) on every machine')
    kind, index = worker_task()
    if kind not in cluster or not 0 <= index < len(cluster[kind]):
        raise InputError(f"TF_CONFIG: task {kind} {index} is not in the cluster {json.dumps(cluster)}")


def make_strategy(name: str):
    """The `tf.distribute.Strategy` for `name` (None for "none"), created once per process and reused."""
    if name not in STRATEGIES:
        raise InputError(f"strategy {name!r} is unknown; valid: {', '.join(STRATEGIES)}")
    if name == "none":
        return None
    if name in _CACHE:
        return _CACHE[name]
    from ivus_tf.core.tf_import import import_tensorflow

    tf = import_tensorflow()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    else:
        _check_cluster()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _CACHE[name] = strategy
    return strategy


def replicas(strategy) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def shard_by_data(dataset):
    """`dataset` with `AutoShardPolicy.DATA`: every worker builds the same global batches and keeps its share."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def prepare_for_fit(model, strategy, dataset) -> None:
    """The Keras workarounds (`ivus_tf.compat`), on `model` only; call after each `compile` and before `fit`, in no
    scope (it enters the strategy's itself). `dataset`: the training dataset (only its element spec is used).
    Nothing to do without a strategy."""
    if strategy is None:
        return
    import tensorflow as tf

    zeros = tf.nest.map_structure(lambda spec: tf.zeros([d or 1 for d in spec.shape], spec.dtype),
                                  dataset.element_spec)
    compat.build_before_fit(model, strategy, zeros)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        compat.rank_one_step_logs(model)


def check_workers_agree(strategy, progress: list[int], where: str) -> None:
    """Under MultiWorkerMirroredStrategy: gather every worker's `progress` (equal-length integers, e.g. finished
    flag and each phase's epoch) and raise `InputError` on every worker when they differ. No-op otherwise."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    local = tf.constant([progress], dtype=tf.int64)

    def gather():
        return tf.distribute.get_replica_context().all_gather(local, axis=0)

    everyone = strategy.experimental_local_results(strategy.run(gather))[0].numpy().tolist()
    if any(row != everyone[0] for row in everyone):
        rows = "; ".join(f"worker {i}: {row}" for i, row in enumerate(everyone))
        raise InputError(f"{where}: the workers' copies of this run are at different points ({rows}; [finished, "
                         "then epochs and done flags per phase]); copy the chief's run folder over every "
                         "<run>.worker-<i> folder (or delete them all to start over) and start all workers again")


def describe_strategy(strategy) -> str | None:
    """One line for the log: which strategy over how many replicas."""
    if strategy is None:
        return None
    import tensorflow as tf

    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    name = "MultiWorkerMirroredStrategy" if multiworker else type(strategy).__name__
    return f"{name} over {replicas(strategy)} replicas"
