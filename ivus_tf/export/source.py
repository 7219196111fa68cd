"""What an export starts from: a trained Keras model, its tasks, input size and (when there is one) its run config.

`load_source` accepts a training run folder (`ivus_tf.run_folder.RunFolder`: its model.keras, and its config read
through `TrainConfig` when present), a `.keras` file, or an in-memory `keras.Model` built by
`ivus_tf.models.build_model`.
The model's own input shape fixes the size frames are resized to; `config.yaml`'s `image_size` is only used when
the model was built with an unknown spatial size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ivus_tf.core.config import to_mapping
from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import CLASS_NAMES, NUM_CLASSES
from ivus_tf.run_folder import RunFolder


@dataclasses.dataclass
class ExportSource:
    """A model ready to export, and what the export records about it."""

    model: Any  # keras.Model, outputs {task: softmax [B, S, S, classes]}
    tasks: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width) the model takes
    arch: str | None
    config: dict | None  # the run's config.yaml (flat TrainConfig keys), if any
    config_text: str | None  # config.yaml verbatim, copied beside the export
    source: str  # where the model came from, for the record

    @property
    def class_names(self) -> dict[str, list[str]]:
        return {task: list(CLASS_NAMES[task]) for task in self.tasks}


def _read_config(folder: RunFolder) -> tuple[dict, str]:
    """The run's config (through `TrainConfig`, all fields) and config.yaml's text, copied beside the export."""
    config = to_mapping(folder.load_config())
    try:
        return config, folder.config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{folder.config_path}: cannot read the run config: {str(error).splitlines()[0]}") from error


def _load_keras(path: Path):
    import zipfile

    import keras

    import ivus_tf.models  # noqa: F401 - registers the custom layers for safe-mode loading

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise InputError(f"{path}: cannot load the Keras model: not a valid .keras file (a .keras file is a zip "
                         "archive; this one is not: damaged, or another format renamed)")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt zip, a missing layer class, ...: one line naming the file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot load the Keras model: {first}") from error


def _tasks(model, where: str) -> tuple[str, ...]:
    names = tuple(getattr(model, "output_names", None) or ())
    if not names or any(name not in NUM_CLASSES for name in names):
        raise InputError(f"{where}: model outputs {list(names)} are not ivus-tf task heads "
                         f"({', '.join(NUM_CLASSES)}); build it with ivus_tf.models.build_model")
    for name, output in zip(names, model.outputs):
        if output.shape[-1] != NUM_CLASSES[name] or len(output.shape) != 4:
            raise InputError(f"{where}: output {name!r} has shape {tuple(output.shape)}, expected "
                             f"[batch, height, width, {NUM_CLASSES[name]}]")
    return tuple(task for task in NUM_CLASSES if task in names)  # canonical order: calcium, wall_lumen


def _image_size(model, config: dict | None, where: str) -> tuple[int, int]:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 1:
        raise InputError(f"{where}: model input shape {shape} is not [batch, height, width, 1] (gray frames)")
    if shape[1] and shape[2]:
        return int(shape[1]), int(shape[2])
    size = (config or {}).get("image_size")
    if isinstance(size, int) and size > 0:
        return size, size
    raise InputError(f"{where}: the model takes frames of any size and no config.yaml gives image_size")


def _arch(model, config: dict | None) -> str | None:
    from ivus_tf.models import ARCHITECTURES

    if config and config.get("arch") in ARCHITECTURES:
        return config["arch"]
    return next((arch for arch in ARCHITECTURES if model.name.startswith(f"{arch}_")), None)


def load_source(model_or_path) -> ExportSource:
    """An `ExportSource` from a run folder, a `.keras` file or a `keras.Model`; `InputError` when it is neither."""
    config = config_text = None
    if hasattr(model_or_path, "outputs") and hasattr(model_or_path, "input_shape"):
        model, where = model_or_path, f"model {getattr(model_or_path, 'name', '?')!r}"
    else:
        path = Path(model_or_path)
        if path.is_dir():
            folder = RunFolder(path)
            model_file = folder.model_path
            if not model_file.is_file():
                raise InputError(f"{path}: no {model_file.name} in this folder (is it a finished training run?)")
            if folder.has_config():
                config, config_text = _read_config(folder)
        elif path.is_file() and path.suffix == ".keras":
            model_file = path
        elif path.exists():
            raise InputError(f"{path}: not a training run folder or a .keras model file")
        else:
            raise InputError(f"{path}: no such run folder or .keras file")
        model, where = _load_keras(model_file), str(path)
    return ExportSource(model=model, tasks=_tasks(model, where), image_size=_image_size(model, config, where),
                        arch=_arch(model, config), config=config, config_text=config_text, source=where)
