"""`GridConfig`: a cross-validation grid as one flat YAML, expanded into named training runs.

A grid is models x training schemes x multi-task lambdas x repeats x folds (Bargsten et al., CDBME 2021, Table 1).
Each run is one `run_training(TrainConfig)` call; this module only decides which configs and names, and checks them
all before anything trains. Every run of repeat r, fold k trains with `run_seed(seed, r, k)`, shared by all models,
schemes and lambdas of that fold (paired comparisons). Run ids (`deeplabv3-multitask-lam1-r0-f2`) are stable for a
config; runs are ordered repeat by repeat, fold by fold, so a half-finished grid has balanced cells. No TensorFlow
here. The keys: docs/grid_and_report.md#the-grid-file; the seeds: docs/protocol.md#repeats-sample-the-initialisation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ivus_tf.core.config import from_mapping, load_yaml
from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import ARCHS, SCHEMES
from ivus_tf.training.config import PATH_FIELDS, TrainConfig, load_config
from ivus_tf.training.distribute import STRATEGIES

# TrainConfig fields the grid sets for each run; a train_overrides entry for one would be silently replaced.
RUNS_DIR = "runs"  # GRID_DIR/runs/<run_id>: the run folders
PER_RUN_FIELDS = ("scheme", "arch", "lam", "repeat", "fold", "out", "backbone_weights", "strategy")
# vocab.BACKBONES but "none" -> (grid key of its weights file, the kind of file it must be: ivus_tf.models.pretrained)
BACKBONE_WEIGHTS = {"imagenet": ("imagenet_backbone_weights", "keras"),
                    "coco": ("coco_backbone_weights", "torchvision")}
_KIND_TEXT = {"keras": "keras.applications.ResNet50 (ImageNet) weights",
              "torchvision": "a torchvision DeepLabV3 conversion (python -m ivus_tf.convert)"}


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """A cross-validation grid (the keys: docs/grid_and_report.md#the-grid-file)."""

    train_config: str = ""
    train_overrides: dict | None = None
    archs: tuple[str, ...] = ("unet_res", "deeplabv3")
    schemes: tuple[str, ...] = SCHEMES
    lams: tuple[float, ...] = (1.0,)
    repeats: int | tuple[int, ...] | None = None
    folds: int | tuple[int, ...] | None = None
    imagenet_backbone_weights: str | None = None
    coco_backbone_weights: str | None = None
    strategy: str = "none"

    def validate(self, source: str = "grid config") -> None:
        """Raise `InputError` naming the key for an unknown arch, scheme or strategy, or a bad value."""
        for key, values, valid in (("archs", self.archs, ARCHS), ("schemes", self.schemes, SCHEMES)):
            if not values:
                raise InputError(f"{source}: {key} is empty; valid: {', '.join(valid)}")
            for value in values:
                if value not in valid:
                    raise InputError(f"{source}: {key}: {value!r} is unknown; valid: {', '.join(valid)}")
            if len(set(values)) != len(values):
                raise InputError(f"{source}: {key} lists a value twice: {list(values)}")
        if self.strategy not in STRATEGIES:
            raise InputError(f"{source}: strategy {self.strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
        if "multitask" in self.schemes:
            if not self.lams:
                raise InputError(f"{source}: lams is empty but schemes has multitask")
            for lam in self.lams:
                if not (math.isfinite(lam) and lam >= 0):
                    raise InputError(f"{source}: lams: {lam} must be a finite number >= 0")
            if len(set(self.lams)) != len(self.lams):
                raise InputError(f"{source}: lams lists a value twice: {list(self.lams)}")
        for key in ("repeats", "folds"):
            value = getattr(self, key)
            if isinstance(value, int) and value < 1:
                raise InputError(f"{source}: {key} must be a count >= 1 or a list of indices, got {value}")
            if isinstance(value, tuple) and (not value or min(value) < 0 or len(set(value)) != len(value)):
                raise InputError(f"{source}: {key} must list distinct indices >= 0, got {list(value)}")
        if self.train_overrides is not None:
            if not isinstance(self.train_overrides, dict):
                raise InputError(f"{source}: train_overrides must be a mapping of TrainConfig fields, "
                                 f"got {self.train_overrides!r}")
            fixed = sorted(set(self.train_overrides) & set(PER_RUN_FIELDS))
            if fixed:
                raise InputError(f"{source}: train_overrides: {', '.join(fixed)} set by the grid for each run; use "
                                 "archs, schemes, lams, repeats, folds, coco_backbone_weights, "
                                 "imagenet_backbone_weights, strategy")


@dataclasses.dataclass(frozen=True)
class GridRun:
    """One run of a grid: its id, its place in the grid and its complete training config."""

    run_id: str
    arch: str
    backbone: str  # "none", "imagenet" or "coco" (results.jsonl)
    scheme: str
    lam: float | None  # None unless multitask
    repeat: int
    fold: int
    config: TrainConfig


def run_seed(seed: int, repeat: int, fold: int) -> int:
    """The seed of the grid's run at (`repeat`, `fold`) for the base `seed`, in [0, 2**31): the first 4 bytes of
    sha256("ivus-tf run seed <seed> <repeat> <fold>"), stable across versions."""
    digest = hashlib.sha256(f"ivus-tf run seed {int(seed)} {int(repeat)} {int(fold)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def run_id(arch: str, backbone: str, scheme: str, lam: float | None, repeat: int, fold: int) -> str:
    """`deeplabv3-multitask-lam1-r0-f2`; `-imagenet` / `-coco` after the arch for a pre-trained start."""
    model = arch + ("" if backbone == "none" else f"-{backbone}")
    return f"{model}-{scheme}" + (f"-lam{lam:g}" if lam is not None else "") + f"-r{repeat}-f{fold}"


def _resolve(value: str, folder: Path) -> str:
    return value if not value or Path(value).expanduser().is_absolute() else str(folder / value)


def _indices(selection, count: int, key: str, source: str) -> list[int]:
    if selection is None:
        return list(range(count))
    indices = list(range(selection)) if isinstance(selection, int) else list(selection)
    if max(indices) >= count:
        raise InputError(f"{source}: {key} {selection!r} reaches index {max(indices)}, but the train config's "
                         f"split has {key} {count} (indices 0..{count - 1})")
    return indices


def load_grid_config(path: str | Path) -> tuple[GridConfig, TrainConfig]:
    """The grid at `path` and its base TrainConfig (train_config + train_overrides), relative paths resolved
    against the grid file's folder. `InputError` (one line naming the file and key) for anything wrong."""
    path = Path(path)
    grid = load_yaml(GridConfig, path)
    folder = path.resolve().parent
    train_path = _resolve(grid.train_config, folder)
    if train_path and not Path(train_path).is_file():
        raise InputError(f"{path}: train_config {grid.train_config!r}: no such file ({train_path})")
    base = load_config(train_path or None)
    overrides = {key: _resolve(value, folder) if key in PATH_FIELDS and isinstance(value, str) else value
                 for key, value in (grid.train_overrides or {}).items()}
    base = from_mapping(TrainConfig, overrides, f"{path}: train_overrides", base=base)
    for key, _ in BACKBONE_WEIGHTS.values():
        weights = getattr(grid, key)
        if weights is not None:
            resolved = _resolve(weights, folder)
            if not Path(resolved).is_file():
                raise InputError(f"{path}: {key} {weights!r}: no such file ({resolved})")
            grid = dataclasses.replace(grid, **{key: resolved})
    return grid, base


def check_backbone_files(grid: GridConfig, source: str = "grid config") -> None:
    """Each backbone weights file is of the kind its key names (a ResNet50 file under coco_backbone_weights would
    label an ImageNet start "COCO"); `InputError` otherwise. Loads the files (TensorFlow)."""
    from ivus_tf.models.pretrained import pretrained_kind

    for key, kind in BACKBONE_WEIGHTS.values():
        weights = getattr(grid, key)
        if weights is None:
            continue
        found = pretrained_kind(weights)
        if found != kind:
            other = next(k for k, expected in BACKBONE_WEIGHTS.values() if expected == found)
            raise InputError(f"{source}: {key} {weights}: {_KIND_TEXT[found]}, not {_KIND_TEXT[kind]}; list it "
                             f"under {other}")


def expand_grid(grid: GridConfig, base: TrainConfig, out: str | Path, source: str = "grid config",
                strategy: str | None = None) -> list[GridRun]:
    """Every run of the grid, in grid order, with its TrainConfig (out = OUT/runs/<run_id>), each validated.

    `strategy` (the CLI's `--strategy`) replaces the grid's."""
    strategy = grid.strategy if strategy is None else strategy  # checked with each run's TrainConfig
    repeats = _indices(grid.repeats, base.repeats, "repeats", source)
    folds = _indices(grid.folds, base.folds, "folds", source)
    models = [(arch, "none") for arch in grid.archs]
    models += [("deeplabv3", backbone) for backbone, (key, _) in BACKBONE_WEIGHTS.items()
               if getattr(grid, key) is not None]
    runs_dir = Path(out) / RUNS_DIR
    runs = []
    for repeat in repeats:
        for fold in folds:
            for arch, backbone in models:
                for scheme in grid.schemes:
                    for lam in (grid.lams if scheme == "multitask" else (None,)):
                        name = run_id(arch, backbone, scheme, lam, repeat, fold)
                        changes = {"scheme": scheme, "arch": arch, "repeat": repeat, "fold": fold,
                                   "seed": run_seed(base.seed, repeat, fold),
                                   "out": str(runs_dir / name), "strategy": strategy,
                                   "backbone_weights": None if backbone == "none"
                                   else getattr(grid, BACKBONE_WEIGHTS[backbone][0])}
                        if lam is not None:
                            changes["lam"] = lam
                        config = dataclasses.replace(base, **changes)
                        config.validate(f"{source}: run {name}")
                        runs.append(GridRun(name, arch, backbone, scheme, lam, repeat, fold, config))
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    index, sep, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise InputError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not sep or count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text!r}: expected I/N with 0 <= I < N")
    return index, count


def shard_runs(runs: Sequence[Any], index: int, count: int) -> list:
    """Every `count`-th run starting at `index` (`--shard index/count`): shards are disjoint and cover the grid."""
    return list(runs[index::count])
