"""The shift test's frames: phantom test sets with both labels on every frame, cached like the embedded phantom.

A test set is `cases` pullbacks of `frames_per_case` frames rendered with one preset, every frame carrying calcium
AND wall-lumen labels (the training phantom alternates them, as in the paper; the arc needs both: the calcium and
the lumen it is seen from). It is generated once into $IVUS_TF_CACHE (`ivus_tf.training.phantom_cache`, keyed by
preset, knobs, cases, frames, seed and package version) and reused.

A case's anatomy depends only on the seed and its index, not on the scanner knobs, so the held-out set (`shifted`)
and the in-distribution set (the run's training preset) drawn with one seed image the SAME vessels with different
scanners: the two columns of the shift table differ only in how the frames look. The seed must differ from the
training phantom's, or the test vessels would be the training vessels (`check_seed`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from ivus_tf.core.config import from_mapping, load_yaml
from ivus_tf.core.errors import InputError
from ivus_tf.training.phantom_cache import dataset_settings, ensure_cached_phantom
from tfrecords_builder.phantom import PRESETS, PhantomConfig
from tfrecords_builder.phantom.config import bounds

DEFAULT_SEED = 1000
TRAINING_DEFAULT_PRESET = "randomized"

__all__ = ["DEFAULT_SEED", "TrainingPhantom", "check_seed", "ensure_test_set", "test_set_knobs", "training_phantom"]


@dataclasses.dataclass(frozen=True)
class TrainingPhantom:
    """The phantom a run trained on: preset name, knobs and seed (from the cache's key.json when it is still there)."""

    preset: str
    knobs: PhantomConfig
    seed: int


def training_phantom(training: Mapping | None) -> TrainingPhantom | None:
    """The embedded phantom that the run with config `training` trained on, or None (its own data, or unknown).

    A run on the embedded phantom records `data` = <cache>/phantom-<preset>-<cases>x<frames>-<key>/records."""
    if not training or not training.get("data"):
        return None
    records = Path(str(training["data"]))
    if records.name != "records" or not records.parent.name.startswith("phantom-"):
        return None
    key = records.parent / "key.json"
    if key.is_file():
        settings = json.loads(key.read_text(encoding="utf-8"))
        return TrainingPhantom(settings["preset"], from_mapping(PhantomConfig, settings["knobs"], str(key)),
                               int(settings["seed"]))
    preset = str(training.get("phantom_preset") or TRAINING_DEFAULT_PRESET)
    if preset not in PRESETS:
        raise InputError(f"the model's training config names an unknown phantom preset {preset!r}")
    knobs = PRESETS[preset]
    if training.get("phantom_config"):
        knobs = load_yaml(PhantomConfig, training["phantom_config"], base=knobs)
    return TrainingPhantom(preset, knobs, int(training.get("phantom_seed") or 0))


def check_seed(seed: int, trained: TrainingPhantom | None) -> None:
    """Refuse a test seed equal to the training phantom's: case k of that seed is training case k."""
    if trained is not None and int(seed) == trained.seed:
        raise InputError(f"--seed {seed} is the seed of the phantom the model trained on: its cases would be the "
                         "training vessels; choose another seed")


def test_set_knobs(preset: str, knobs: PhantomConfig | None = None, image_size: int | None = None) -> PhantomConfig:
    """The preset's knobs (or `knobs`), with the frame size fixed to `image_size` when given: the pixel spacing
    then spans the middle of the preset's field of view (small frames for tests; every other knob unchanged)."""
    if preset not in PRESETS:
        raise InputError(f"unknown phantom preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    knobs = PRESETS[preset] if knobs is None else knobs
    if image_size is None:
        return knobs
    if int(image_size) < 32:
        raise InputError(f"image_size must be >= 32 pixels, got {image_size}")
    field_of_view_mm = sum(bounds(knobs.field_of_view_mm)) / 2
    spacing = field_of_view_mm / int(image_size)
    return dataclasses.replace(knobs, image_size=int(image_size), pixel_spacing_mm=spacing,
                               field_of_view_mm=field_of_view_mm)


def ensure_test_set(preset: str, cases: int, frames_per_case: int, seed: int, knobs: PhantomConfig | None = None,
                    image_size: int | None = None, log=print) -> tuple[Path, dict]:
    """(records folder, settings) of the test set, generated into the cache on first use."""
    if int(cases) < 1 or int(frames_per_case) < 1:
        raise InputError(f"need at least one case and one frame per case, got {cases} x {frames_per_case}")
    knobs = test_set_knobs(preset, knobs, image_size)
    knobs.validate(f"phantom preset {preset}")
    settings = dataset_settings(preset, knobs, cases, frames_per_case, seed, disjoint_tasks=False)
    return ensure_cached_phantom(settings, knobs, log, f"the {preset} test set"), settings
