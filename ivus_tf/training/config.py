"""`TrainConfig`: every setting of a training run, flat and typed, loaded from YAML and overridden by CLI flags.

Keys are the field names (a YAML typo is an error listing the valid keys, `ivus_tf.core.config`). Defaults are the
paper's settings (Bargsten et al., CDBME 2021) except `test_fraction`; the paper's 6-case test set is
configs/paper.yaml. `lam` is the multi-task weight lambda (`lambda` is a Python keyword; the flag is `--lambda`).
Relative paths (`PATH_FIELDS`) in a YAML file are relative to that file's folder, on the command line to the working
directory. What each field means: docs/training.md#fields; the protocol choices: docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ivus_tf.augment_config import AUGMENT_FIELDS, AugmentConfig, augment_fields
from ivus_tf.core.config import load_yaml, to_mapping
from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import (
    ARCHS,
    HEADS,
    LOSSES,
    LR_SCHEDULES,
    PRETRAIN_TRANSFERS,
    SCHEMES,
    SELECTION_METRICS,
    UNET_STAGES,
)
from ivus_tf.postprocess import PRESETS as _POSTPROCESS
from ivus_tf.training.distribute import STRATEGIES

LOSS_WEIGHTINGS = ("inverse", "inverse_square")
PHANTOM_PRESETS = ("randomized", "default", "benchmark")  # tfrecords_builder.phantom.TRAINING_PRESETS (tested);
# the held-out `shifted` preset is not among them: no training run may use it
PATH_FIELDS = ("data", "out", "splits", "phantom_config")
POSTPROCESS_PRESETS = tuple(_POSTPROCESS)
# Fields that do not change what is trained; they stay out of the default run name's hash.
_NOT_HASHED = ("out", "strategy", "postprocess", "rule_baseline")
# Fields a run folder may be resumed with a different value of: how the run executes or what is reported besides
# the model, not what it trains.
_EXECUTION_ONLY = ("strategy", "postprocess", "rule_baseline")
# What a run folder's config.yaml written before a field existed meant by leaving it out: the behaviour then.
# Fields added later whose default is what every earlier run did: at that value they are left out of the run's
# hash (configs from before them keep their run folder names) and a grid run recorded without them counts as it.
ADDED_LATER_DEFAULTS = {"lr_schedule": "constant", "loss": "gdl"}
LEGACY_DEFAULTS = {"pretrain_transfer": "encoder", "unet_stages": "wide_bottom", "selection_metric": "pooled_dice"}
_AUGMENT = AugmentConfig()  # the aug_* defaults (one home: ivus_tf.augment_config; a test keeps the copies equal)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (the less obvious fields: docs/training.md#fields)."""

    scheme: str = "calcium"
    arch: str = "deeplabv3"
    data: str = ""
    out: str = ""
    lam: float = 1.0
    repeat: int = 0
    fold: int = 0
    # model
    width: float = 1.0
    head: str = "linear"
    aspp_rates: tuple[int, ...] | None = None
    backbone_weights: str | None = None
    unet_stages: str = "doubling"
    bn_momentum: float = 0.9
    # optimisation
    epochs: int = 100
    pretrain_epochs: int | None = None
    freeze_encoder_epochs: int = 0
    pretrain_transfer: str = "all_but_classifier"
    steps_per_epoch: int = 0
    batch_size: int = 12
    learning_rate: float = 2e-4
    lr_schedule: str = "constant"
    loss_weighting: str = "inverse"
    loss: str = "gdl"
    selection_metric: str = "per_frame_dice"
    patience: int = 20
    # input pipeline
    image_size: int = 256
    calcium_fraction: float = 0.5
    flip: bool = True
    rotate: bool = True
    appearance_augmentation: bool = False
    aug_zoom_probability: float = _AUGMENT.aug_zoom_probability
    aug_zoom_range: tuple[float, float] = _AUGMENT.aug_zoom_range
    aug_speckle_probability: float = _AUGMENT.aug_speckle_probability
    aug_speckle_strength_range: tuple[float, float] = _AUGMENT.aug_speckle_strength_range
    aug_noise_probability: float = _AUGMENT.aug_noise_probability
    aug_noise_std_range: tuple[float, float] = _AUGMENT.aug_noise_std_range
    aug_blur_probability: float = _AUGMENT.aug_blur_probability
    aug_blur_sigma_px_range: tuple[float, float] = _AUGMENT.aug_blur_sigma_px_range
    aug_brightness_probability: float = _AUGMENT.aug_brightness_probability
    aug_brightness_range: tuple[float, float] = _AUGMENT.aug_brightness_range
    aug_brightness_offset_probability: float = _AUGMENT.aug_brightness_offset_probability
    aug_brightness_offset_range: tuple[float, float] = _AUGMENT.aug_brightness_offset_range
    aug_contrast_probability: float = _AUGMENT.aug_contrast_probability
    aug_contrast_range: tuple[float, float] = _AUGMENT.aug_contrast_range
    aug_low_resolution_probability: float = _AUGMENT.aug_low_resolution_probability
    aug_low_resolution_scale_range: tuple[float, float] = _AUGMENT.aug_low_resolution_scale_range
    aug_gamma_probability: float = _AUGMENT.aug_gamma_probability
    aug_inverted_gamma_probability: float = _AUGMENT.aug_inverted_gamma_probability
    aug_gamma_range: tuple[float, float] = _AUGMENT.aug_gamma_range
    # splits
    splits: str = ""
    split_seed: int = 0
    test_fraction: float = 0.2
    n_test_cases: int | None = None
    test_both_labels: bool = False
    repeats: int = 10
    folds: int = 3
    # the embedded phantom (when `data` is empty)
    phantom_preset: str = "randomized"
    phantom_config: str = ""
    phantom_cases: int = 15
    phantom_frames_per_case: int = 20
    phantom_seed: int = 0
    # logging and outputs
    tb_image_every_epochs: int = 5
    tb_image_frames: int = 4
    save_predictions: bool = False
    postprocess: str = "default"
    rule_baseline: bool = True
    # execution
    seed: int = 0
    deterministic: bool = True
    jit_compile: bool = False
    run_eagerly: bool = False
    strategy: str = "none"

    def validate(self, source: str = "training config") -> None:
        """Raise `InputError` naming the field when a value is out of range or unknown."""
        def fail(field: str, problem: str):
            raise InputError(f"{source}: {field} {problem}")

        for field, choices in (("scheme", SCHEMES), ("arch", ARCHS), ("head", HEADS),
                               ("loss_weighting", LOSS_WEIGHTINGS), ("loss", LOSSES),
                               ("phantom_preset", PHANTOM_PRESETS), ("strategy", STRATEGIES),
                               ("postprocess", POSTPROCESS_PRESETS),
                               ("pretrain_transfer", PRETRAIN_TRANSFERS), ("unet_stages", UNET_STAGES),
                               ("selection_metric", SELECTION_METRICS), ("lr_schedule", LR_SCHEDULES)):
            value = getattr(self, field)
            if value not in choices:
                fail(field, f"{value!r} is unknown; valid: {', '.join(choices)}")
        minimum = {"epochs": 1, "batch_size": 1, "image_size": 8, "repeats": 1, "folds": 2, "phantom_cases": 1,
                   "phantom_frames_per_case": 1, "tb_image_frames": 0, "tb_image_every_epochs": 0, "repeat": 0,
                   "fold": 0, "freeze_encoder_epochs": 0, "steps_per_epoch": 0, "patience": 0, "seed": 0,
                   "split_seed": 0, "phantom_seed": 0}
        for field, low in minimum.items():
            if getattr(self, field) < low:
                fail(field, f"must be >= {low}, got {getattr(self, field)}")
        if self.n_test_cases is not None and self.n_test_cases < 1:
            fail("n_test_cases", f"must be >= 1 (or null: test_fraction of the cases), got {self.n_test_cases}")
        if self.pretrain_epochs is not None and self.pretrain_epochs < 1:
            fail("pretrain_epochs", f"must be >= 1 (or null: same as epochs), got {self.pretrain_epochs}")
        if self.repeat >= self.repeats:
            fail("repeat", f"{self.repeat} out of range: repeats 0..{self.repeats - 1} (repeats {self.repeats})")
        if self.fold >= self.folds:
            fail("fold", f"{self.fold} out of range: folds 0..{self.folds - 1} (folds {self.folds})")
        if self.freeze_encoder_epochs and self.scheme != "pretrain":
            fail("freeze_encoder_epochs", "only applies to scheme pretrain (the encoder comes pre-trained)")
        if not 0 <= self.lam < float("inf"):
            fail("lam", f"must be a finite number >= 0, got {self.lam}")
        for field in ("learning_rate", "width"):
            if not 0 < getattr(self, field) < float("inf"):
                fail(field, f"must be a finite number > 0, got {getattr(self, field)}")
        if not 0 <= self.bn_momentum < 1:
            fail("bn_momentum", f"must be in [0, 1), got {self.bn_momentum}")
        if not 0 <= self.calcium_fraction <= 1:
            fail("calcium_fraction", f"must be in [0, 1], got {self.calcium_fraction}")
        if not 0 <= self.test_fraction < 1:
            fail("test_fraction", f"must be in [0, 1), got {self.test_fraction}")
        if self.arch == "unet_res" and self.image_size % 8:
            fail("image_size", f"{self.image_size} must be a multiple of 8 for unet_res (three downsamplings)")
        if self.arch != "deeplabv3" and (self.aspp_rates is not None or self.backbone_weights is not None):
            fail("aspp_rates/backbone_weights", f"only apply to arch deeplabv3, not {self.arch}")
        AugmentConfig(**augment_fields(self)).validate(source)

    # ------------------------------------------------------------------------------------------- derived

    @property
    def wall_lumen_epochs(self) -> int:
        """Epochs of the wall-lumen pre-training phase."""
        return self.epochs if self.pretrain_epochs is None else self.pretrain_epochs

    def model_options(self) -> dict:
        """Architecture keyword options for `build_model`."""
        options = {}
        if self.aspp_rates is not None:
            options["aspp_rates"] = tuple(self.aspp_rates)
        if self.backbone_weights is not None:
            options["backbone_weights"] = self.backbone_weights
        if self.arch == "unet_res":
            options["stages"] = self.unet_stages
        return options

    def shaping_fields(self) -> dict:
        """{field: value} of what shapes the run: all but `_NOT_HASHED`, the augmentation fields only while
        `appearance_augmentation` is on, and `ADDED_LATER_DEFAULTS` only away from their default (so configs
        without them keep the hash they had before they existed)."""
        skip = _NOT_HASHED + (() if self.appearance_augmentation else AUGMENT_FIELDS)
        skip += tuple(field for field, value in ADDED_LATER_DEFAULTS.items() if getattr(self, field) == value)
        return {k: v for k, v in to_mapping(self).items() if k not in skip}

    def fingerprint(self) -> str:
        """A short hash of `shaping_fields`."""
        return hashlib.sha256(json.dumps(self.shaping_fields(), sort_keys=True).encode()).hexdigest()[:6]

    def default_run_name(self) -> str:
        """`<scheme>-<arch>[-lam<lambda>]-r<repeat>f<fold>-<fingerprint>`: readable and stable for one config."""
        lam = f"-lam{self.lam:g}" if self.scheme == "multitask" else ""
        return f"{self.scheme}-{self.arch}{lam}-r{self.repeat}f{self.fold}-{self.fingerprint()}"


def load_config(path: str | Path | None = None, overrides: dict | None = None, saved_run: bool = False
                ) -> TrainConfig:
    """Defaults, then the YAML file at `path` (relative paths inside it resolved against its folder), then
    `overrides` ({field: value}, e.g. from CLI flags; checked like YAML values). `saved_run`: `path` is a run
    folder's config.yaml, whose missing fields (written before they existed) take `LEGACY_DEFAULTS`, the behaviour
    of that run, so an old run is never mistaken for a new one."""
    from ivus_tf.core.config import from_mapping

    config = dataclasses.replace(TrainConfig(), **LEGACY_DEFAULTS) if saved_run else TrainConfig()
    if path is not None:
        config = load_yaml(TrainConfig, path, base=config)
        folder = Path(path).resolve().parent
        config = dataclasses.replace(config, **{
            field: str(folder / getattr(config, field)) for field in PATH_FIELDS
            if getattr(config, field) and not Path(getattr(config, field)).expanduser().is_absolute()})
    if overrides:
        config = from_mapping(TrainConfig, overrides, "command line", base=config)
    config.validate()
    return config


def config_differences(saved: TrainConfig, wanted: TrainConfig) -> list[str]:
    """`field: saved -> wanted` for every field that differs (the `aug_*` fields only when either run uses them)."""
    ignored = _EXECUTION_ONLY + (() if saved.appearance_augmentation or wanted.appearance_augmentation
                                 else AUGMENT_FIELDS)
    return [f"{f.name} {getattr(saved, f.name)!r} -> {getattr(wanted, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in ignored and getattr(saved, f.name) != getattr(wanted, f.name)]
