"""The embedded default dataset: phantom pullbacks -> manifest -> TFRecords, built once into a cache folder.

`python -m ivus_tf.train` without `--data` trains on the phantom. The first run generates it
(`tfrecords_builder.phantom.generate_dataset`, with calcium and wall-lumen labels on alternate frames as in the
paper, where no frame carries both) and builds the records (`tfrecords_builder.build.build_records`); later runs
with the same phantom settings reuse them. The folder is

    $IVUS_TF_CACHE (default ~/.cache/ivus-tf) / phantom-<preset>-<cases>x<frames>-<key> /
        phantom/                  the manifest layout (PNG frames and masks, phantom.json)
        records/                  the TFRecords (the run's `data`)
        records-splits.json       the default splits file of runs on these records
        key.json                  what the key was computed from

with `<key>` a hash of everything that determines the frames: preset, knobs (after `phantom_config`), cases,
frames per case, seed, whether frames carry one label or both, and the package version (a new generator may draw
other frames). Both stages write to a temporary folder and rename it at the end, and a lock file serialises
concurrent first runs, so an interrupted build leaves nothing that looks complete.

`ensure_cached_phantom(settings, knobs)` is the same cache for any phantom settings: the shift test
(`ivus_tf.shift`) keeps its test sets there (both labels on every frame, presets no training recipe takes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from ivus_tf.core.atomic import atomic_write_json, file_lock
from ivus_tf.core.version import __version__
from ivus_tf.training.config import TrainConfig

CACHE_ENV = "IVUS_TF_CACHE"


def cache_root() -> Path:
    """$IVUS_TF_CACHE, or ~/.cache/ivus-tf."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ivus-tf").expanduser()


def phantom_knobs(config: TrainConfig):
    """The `PhantomConfig` of `config`: its preset, updated by the `phantom_config` YAML if one is named."""
    from ivus_tf.core.config import load_yaml
    from tfrecords_builder.phantom import PRESETS, PhantomConfig

    knobs = PRESETS[config.phantom_preset]
    return load_yaml(PhantomConfig, config.phantom_config, base=knobs) if config.phantom_config else knobs


def dataset_settings(preset: str, knobs, cases: int, frames_per_case: int, seed: int,
                     disjoint_tasks: bool) -> dict:
    """Everything that determines a cached phantom's frames (JSON-ready), the input of its cache key."""
    return {"preset": preset, "cases": int(cases), "frames_per_case": int(frames_per_case), "seed": int(seed),
            "disjoint_tasks": bool(disjoint_tasks), "knobs": json.loads(json.dumps(dataclasses.asdict(knobs))),
            "package_version": __version__}


def phantom_settings(config: TrainConfig) -> dict:
    """Everything that determines the training phantom's frames (JSON-ready); validates `phantom_config`."""
    return dataset_settings(config.phantom_preset, phantom_knobs(config), config.phantom_cases,
                            config.phantom_frames_per_case, config.phantom_seed, disjoint_tasks=True)


def settings_folder(settings: dict) -> Path:
    """The cache folder of the phantom with these `dataset_settings` (it may not exist yet)."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / f"phantom-{settings['preset']}-{settings['cases']}x{settings['frames_per_case']}-{key}"


def phantom_folder(config: TrainConfig) -> Path:
    """The cache folder of the phantom that `config` asks for (it may not exist yet)."""
    return settings_folder(phantom_settings(config))


def _span(knob) -> str:
    """A knob as text: `256` or `256-512` (a range sampled per case)."""
    return "-".join(f"{v:g}" for v in dict.fromkeys(knob)) if isinstance(knob, list) else f"{knob:g}"


def ensure_phantom_records(config: TrainConfig, log=print) -> Path:
    """The records folder of the phantom `config` asks for, generating and building it on first use."""
    return ensure_cached_phantom(phantom_settings(config), phantom_knobs(config), log, "the embedded phantom")


def ensure_cached_phantom(settings: dict, knobs, log=print, what: str = "a phantom") -> Path:
    """The records folder of the phantom of `settings` (`dataset_settings`; `knobs` the `PhantomConfig` they
    were made from), generating and building it into the cache on first use."""
    folder = settings_folder(settings)
    records = folder / "records"
    if (records / "index.json").is_file():
        log(f"data: {what}, cached in {folder}")
        return records
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if (records / "index.json").is_file():  # built by a concurrent run while we waited
            return records
        from tfrecords_builder.build import build_records
        from tfrecords_builder.phantom import generate_dataset

        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "key.json", settings)
        spec = settings["knobs"]
        phantom = folder / "phantom"
        if not (phantom / "manifest.csv").is_file():
            log(f"data: generating {what} ({settings['cases']} pullbacks x {settings['frames_per_case']} frames of "
                f"{_span(spec['image_size'])} px at {_span(spec['pixel_spacing_mm'])} mm, preset "
                f"{settings['preset']}) into {folder}")
            generate_dataset(phantom, cases=settings["cases"], frames_per_case=settings["frames_per_case"],
                             seed=settings["seed"], preset=settings["preset"], config=knobs,
                             disjoint_tasks=settings["disjoint_tasks"],
                             workers=max(1, min(os.cpu_count() or 1, settings["cases"])), overwrite=True)
        log(f"data: building TFRecords from the manifest of {what}")
        build_records(phantom / "manifest.csv", records, overwrite=True)
    return records
