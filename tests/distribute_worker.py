"""One tiny training run in its own process, for tests/test_distribute.py (not a test module itself).

    python tests/distribute_worker.py RECORDS OUT STRATEGY [LOGICAL_CPUS]
    python tests/distribute_worker.py RECORDS OUT step 2

Splits the CPU into LOGICAL_CPUS logical devices (before TensorFlow starts: that is how MirroredStrategy gets two
replicas on a CPU), then trains `tiny_config` (tests/test_train_run.py's tiny runs at one step per epoch,
multitask so that both losses, their frame weights and the batch composition are exercised) with `run_training`.
A multi-worker process gets its cluster from TF_CONFIG. Exit status: run_training's (errors print one line).

`step` compares one plain-SGD step of the multitask model under MirroredStrategy (2 logical CPUs) with the same step
on one device, from the same initial weights and the same global batch, and writes OUT (JSON): the largest
difference between the two weight updates and the largest update, and the Dice metrics (pooled and per frame, the
selection metrics) Keras's `evaluate` reports on that batch before the step, single-device and distributed. SGD's
update is the gradient times the learning rate, so this checks the distributed gradient itself (Adam would turn
float noise in near-zero gradient components into full-size steps of either sign).
"""

import dataclasses
import sys

from ivus_tf.core.tf_import import import_tensorflow
from ivus_tf.training.config import TrainConfig


def tiny_config(records: str, out: str, strategy: str, unet_stages: str = "wide_bottom") -> TrainConfig:
    """The tiny runs compared with single-device training. Their U-Net is the wide_bottom variant: at this width
    (1/16) the doubling default's gradient is so sensitive to float rounding that merely reordering the 4 frames of
    a batch on ONE device changes it by up to 6 % (1e-4 for the variant, on the batches used here), which a few
    Adam steps turn into loss differences above the comparison's tolerance. `step` uses the default design."""
    return TrainConfig(scheme="multitask", arch="unet_res", width=0.0625, image_size=32, batch_size=4, epochs=2,
                       steps_per_epoch=1, learning_rate=1e-2, data=records, out=out, repeats=1, folds=2,
                       tb_image_every_epochs=1, tb_image_frames=1, run_eagerly=True, strategy=strategy,
                       unet_stages=unet_stages)


def one_step_updates(records: str, out: str) -> int:
    import json

    import keras
    import numpy as np
    import tensorflow as tf

    from ivus_tf.data.pipeline import make_train_dataset
    from ivus_tf.losses import GeneralizedDiceLoss, multitask_loss_weights
    from ivus_tf.training.distribute import make_strategy, prepare_for_fit, shard_by_data
    from ivus_tf.training.phase import build_phase_model, phase_metrics, pipeline_config
    from ivus_tf.training.schemes import phases_of

    config = tiny_config(records, "unused", "mirrored", unet_stages="doubling")  # the default design
    phase = phases_of(config)[-1]
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    batch = next(iter(make_train_dataset(records, ["case0", "case1", "case2", "case3"],
                                         pipeline_config(config, phase.tasks))))
    dataset = shard_by_data(tf.data.Dataset.from_tensors(batch))  # the same batch for both (no reshuffling)
    updates, metrics = [], []
    for distributed in (False, True):
        keras.utils.set_random_seed(0)
        scope = strategy.scope() if distributed else tf.name_scope("single")
        with scope:
            model = build_phase_model(config, phase, synchronized=distributed)
            model.compile(optimizer=keras.optimizers.SGD(1.0),
                          loss={task: GeneralizedDiceLoss() for task in phase.tasks},
                          loss_weights=multitask_loss_weights(0.7, phase.tasks),
                          weighted_metrics=phase_metrics(phase.tasks), run_eagerly=True)
        before = [np.array(w) for w in model.trainable_weights]
        prepare_for_fit(model, strategy if distributed else None, dataset)
        metrics.append({k: float(np.ravel(v)[0]) for k, v in model.evaluate(dataset, verbose=0,
                                                                             return_dict=True).items()})
        model.fit(dataset, epochs=1, verbose=0)
        updates.append([np.array(w) - b for w, b in zip(model.trainable_weights, before)])

    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(*updates))
    largest = max(float(np.max(np.abs(a))) for a in updates[0])
    with open(out, "w") as handle:
        json.dump({"max_update_difference": difference, "max_update": largest, "metrics": metrics}, handle)
    return 0


def main(argv) -> int:
    records, out, strategy = argv[:3]
    cpus = int(argv[3]) if len(argv) > 3 else 1
    tf = import_tensorflow()
    if cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
    if strategy == "step":
        return one_step_updates(records, out)
    from ivus_tf.core.errors import run_cli
    from ivus_tf.training.run import run_training

    config = tiny_config(records, out, strategy)
    return run_cli(lambda _: (run_training(dataclasses.replace(config)), 0)[1], [])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
