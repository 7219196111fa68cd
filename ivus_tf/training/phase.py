"""Training one phase: build and compile the model, resume or initialise it, `fit` with validation, select.

A phase (`ivus_tf.training.schemes.Phase`) trains one model whose heads are the phase's tasks with the
generalized Dice loss per task (`loss_weights` = lambda for calcium, 1 for wall-lumen; Keras passes each task its
[B] frame weights from the pipeline) and Adam. Validation runs every epoch on the validation fold at the training
resolution (streaming `FrameDice`, the mean per-frame Dice with the test's empty rules, and `TaskDice`, pooled over
the fold; both logged); `PhaseCheckpoint` keeps the best epoch by the one `selection_metric` names, stops after
`patience` epochs without improvement and writes the resumable checkpoint. A phase that starts from an earlier
phase's model (`weights_from`) copies its weights (`transfer`) before its first epoch.

Resume: the training dataset is infinite and deterministic for a seed (tf.data seeds, stateless augmentation
keyed by the batch counter), so a phase resumed at epoch e skips e x steps batches and sees exactly the batches
an uninterrupted run would have seen (skipping costs the batches' augmentation, not a train step). With
`freeze_encoder_epochs` F the phase runs as two stages, encoder frozen (`trainable=False`, batch norm then runs
in inference mode) for epochs [0, F) and trainable from F on, each with its own Adam: the optimizer state a
checkpoint holds is restored only into the stage it was saved from.

Distributed (`config.strategy`, `ivus_tf.training.distribute`): the model, its optimizer and metrics are created in
the strategy's scope with synchronized batch norm, the datasets are sharded by data, and `prepare_for_fit` applies
the Keras workarounds before each `fit`; the snapshot twin (best.keras) stays a plain single-device model.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ivus_tf.core.tf_import import import_tensorflow

import_tensorflow()  # quietly, before Keras imports it: the imports below must follow (hence noqa: E402)
import keras  # noqa: E402

from ivus_tf import compat  # noqa: E402
from ivus_tf.augment_config import augment_fields  # noqa: E402
from ivus_tf.data.pipeline import PipelineConfig, make_eval_dataset, make_train_dataset, train_streams  # noqa: E402
from ivus_tf.keras_metrics import task_dice_metrics  # noqa: E402
from ivus_tf.losses import GeneralizedDiceLoss, multitask_loss_weights  # noqa: E402
from ivus_tf.models.build import ENCODER_NAME, build_model, iter_layers, transfer_weights  # noqa: E402
from ivus_tf.run_folder import RunFolder  # noqa: E402
from ivus_tf.training.callbacks import EpochLine, FiniteLossGuard, PhaseCheckpoint, TensorBoard, learning_rate_callbacks  # noqa: E402
from ivus_tf.training.config import TrainConfig  # noqa: E402
from ivus_tf.training.distribute import make_strategy, prepare_for_fit, replicas, shard_by_data  # noqa: E402
from ivus_tf.training.schemes import Phase, PhaseCases  # noqa: E402
from ivus_tf.training.state import PhaseState, read_state, save_model_atomic, write_state  # noqa: E402


def pipeline_config(config: TrainConfig, tasks: Sequence[str], train: bool = True) -> PipelineConfig:
    """The tf.data settings of a phase: augmentation and shuffling for training only."""
    augment = augment_fields(config)
    augment["appearance_augmentation"] = config.appearance_augmentation and train
    return PipelineConfig(image_size=config.image_size, batch_size=config.batch_size, tasks=tuple(tasks),
                          calcium_fraction=config.calcium_fraction, flip=config.flip and train,
                          rotate=config.rotate and train, shuffle_buffer=1024 if train else 0, seed=config.seed,
                          **augment)


def build_phase_model(config: TrainConfig, phase: Phase, synchronized: bool = False) -> keras.Model:
    """The phase's model, every batch norm layer with momentum `config.bn_momentum` (saved in its config) and,
    with `synchronized` (training under a strategy with several replicas), statistics over the global batch
    (`ivus_tf.compat.synchronize_batch_norm`: Keras's own synchronized variance cancels catastrophically)."""
    model = build_model(config.arch, phase.tasks, (config.image_size, config.image_size, 1), width=config.width,
                        head=config.head, name=f"{config.arch}_{phase.name}", **config.model_options())
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
            if synchronized:
                compat.synchronize_batch_norm(layer)
    return model


def phase_metrics(tasks: Sequence[str]) -> dict:
    """`task_dice_metrics`, named `<task>_dice`... for a one-task model too (Keras prefixes only with 2+ outputs)."""
    metrics = task_dice_metrics(tasks)
    if len(tasks) > 1:
        return metrics
    task = tasks[0]
    return {task: [type(m).from_config({**m.get_config(), "name": f"{task}_{m.name}"}) for m in metrics[task]]}


def compile_phase_model(model: keras.Model, config: TrainConfig, phase: Phase, frozen: bool = False) -> None:
    """Compile for training; `frozen` makes the encoder non-trainable (Keras then runs its batch norm in inference
    mode, the usual fine-tuning behaviour)."""
    model.get_layer(ENCODER_NAME).trainable = not frozen
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss={task: GeneralizedDiceLoss(config.loss_weighting, loss=config.loss) for task in phase.tasks},
        loss_weights=multitask_loss_weights(phase.lam, phase.tasks),
        weighted_metrics=phase_metrics(phase.tasks),
        jit_compile=config.jit_compile,
        run_eagerly=config.run_eagerly,
    )


def steps_per_epoch(config: TrainConfig, records_dir, train_cases: Sequence[str], tasks: Sequence[str]) -> int:
    """`config.steps_per_epoch`, or one pass over the phase's training frames (0)."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    frames = sum(s.frames for s in train_streams(records_dir, train_cases, pipeline_config(config, tasks)))
    return max(1, math.ceil(frames / config.batch_size))


def _stages(phase: Phase) -> list[tuple[bool, int]]:
    """[(encoder frozen, end epoch)]: the frozen-encoder stage first when the phase has one."""
    if phase.freeze_encoder_epochs:
        return [(True, phase.freeze_encoder_epochs), (False, phase.epochs)]
    return [(False, phase.epochs)]


def train_phase(config: TrainConfig, phase: Phase, cases: PhaseCases, records_dir, run: RunFolder,
                log: Callable[[str], None] = print, extra_callbacks: Sequence[keras.callbacks.Callback] = ()
                ) -> PhaseState:
    """Train (or resume, or skip when done) `phase`; return its final state. best.keras holds the selection."""
    files = run.phase(phase.name)
    files.path.mkdir(parents=True, exist_ok=True)
    state = read_state(files)
    if state.done:
        log(f"phase {phase.name}: already done (selected epoch {state.best_epoch + 1}, {phase.monitor} "
            f"{state.best if state.best is not None else float('nan'):.4f}); skipping")
        return state
    steps = steps_per_epoch(config, records_dir, cases.train, phase.tasks)
    strategy = make_strategy(config.strategy)
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    with scope():  # the trained model (and its optimizer, metrics) lives on the replicas; the twin does not
        model = build_phase_model(config, phase, synchronized=replicas(strategy) > 1)
    twin = build_phase_model(config, phase)
    if state.epoch > 0:
        log(f"phase {phase.name}: resuming at epoch {state.epoch + 1}/{phase.epochs} from {files.last_weights}")
    else:
        log(f"phase {phase.name}: {phase.epochs} epochs x {steps} steps of {config.batch_size} frames; "
            f"{len(cases.train)} training cases, {len(cases.val)} validation cases; selects on {phase.monitor}")
        if phase.weights_from:
            source_path = run.phase(phase.weights_from).best_model
            source = keras.models.load_model(source_path, compile=False)
            count = transfer_weights(source, model, phase.transfer)
            what = "encoder" if phase.transfer == "encoder" else "every weight but the classifier"
            log(f"phase {phase.name}: {what} initialised from {source_path} ({count} weight tensors)")
    train_data = make_train_dataset(records_dir, cases.train, pipeline_config(config, phase.tasks))
    val_data = make_eval_dataset(records_dir, cases.val, pipeline_config(config, phase.tasks, train=False))
    if strategy is not None:
        train_data, val_data = shard_by_data(train_data), shard_by_data(val_data)

    def snapshot() -> keras.Model:
        for target, source in zip(twin.weights, model.weights):
            target.assign(source)
        return twin

    tb_dir = run.tb_phase_dir(phase.name)
    standard = [*learning_rate_callbacks(config.lr_schedule, config.learning_rate, phase.epochs),
                TensorBoard(str(tb_dir), write_graph=False, profile_batch=0)]
    standard += _image_callbacks(config, phase, records_dir, cases.val, tb_dir)
    verbose = 1 if sys.stdout.isatty() else 0  # progress bar on a terminal, one short line per epoch otherwise
    # before PhaseCheckpoint, so that its line follows the epoch's
    standard.append(keras.callbacks.ProgbarLogger() if verbose else EpochLine(phase.epochs, log))
    for frozen, end in _stages(phase):
        if state.done or state.epoch >= end:
            continue
        if state.epoch > 0 and state.frozen != frozen:  # new stage: weights only, a fresh optimizer
            model.load_weights(str(files.last_weights))
        with scope():
            compile_phase_model(model, config, phase, frozen)
            if state.epoch > 0 and state.frozen == frozen:
                model.optimizer.build(model.trainable_variables)
        if state.epoch > 0 and state.frozen == frozen:
            model.load_weights(str(files.last_weights))
        prepare_for_fit(model, strategy, train_data)
        if frozen:
            log(f"phase {phase.name}: encoder frozen for epochs 1-{end}")
        guard = FiniteLossGuard(phase.name, phase.epochs, steps, files)
        checkpoint = PhaseCheckpoint(files, phase.monitor, phase.epochs, config.patience, state, snapshot,
                                     frozen, log)
        model.fit(train_data.skip(state.epoch * steps), epochs=end, initial_epoch=state.epoch,
                  steps_per_epoch=steps, shuffle=False, validation_data=val_data, verbose=verbose,
                  callbacks=[guard, *standard, *extra_callbacks, checkpoint])
        state = checkpoint.state
    if not files.best_model.is_file():  # no finite validation Dice in any epoch: keep the last model
        save_model_atomic(snapshot(), files.best_model)
        state.best_epoch = state.epoch - 1
        write_state(files, state)
    return state


def _image_callbacks(config: TrainConfig, phase: Phase, records_dir, val_cases, tb_dir: Path) -> list:
    """Validation frames with predicted and true contours in TensorBoard every `tb_image_every_epochs` epochs."""
    if not config.tb_image_every_epochs or not config.tb_image_frames:
        return []
    from ivus_tf.tensorboard_logging import ContourImages

    return [ContourImages(str(tb_dir), records_dir, val_cases, phase.tasks, config.image_size,
                          every_n_epochs=config.tb_image_every_epochs, max_frames=config.tb_image_frames)]


def load_selected(run: RunFolder, phase: Phase) -> keras.Model:
    """The selected model of a finished phase (uncompiled)."""
    return keras.models.load_model(run.phase(phase.name).best_model, compile=False)

