"""Every YAML file shipped under configs/ validates against the dataclass it configures."""

from pathlib import Path

import pytest

from ivus_tf.config import load_yaml
from tfrecords_builder.phantom import PRESETS, PhantomConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
KINDS = {"phantom_": PhantomConfig}


def test_configs_folder_is_not_empty():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path):
    kind = next((cls for prefix, cls in KINDS.items() if path.name.startswith(prefix)), None)
    assert kind is not None, f"{path.name}: no dataclass known for this config name"
    config = load_yaml(kind, path, base=PRESETS["default"])
    assert isinstance(config, kind)


def test_small_cpu_phantom_renders(tmp_path):
    import numpy as np
    from tfrecords_builder.phantom import render_case_frames

    config = load_yaml(PhantomConfig, Path(__file__).parents[1] / "configs" / "phantom_small_cpu.yaml")
    _, _, image, calcium, wall_lumen = next(render_case_frames(config, 0, 0, 1))
    assert image.shape == calcium.shape == wall_lumen.shape == (256, 256) and image.max() > 100
    assert np.all(wall_lumen[calcium] == 2)
