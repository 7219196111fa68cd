"""Every YAML file shipped under configs/ validates against the dataclass it configures (grid configs: every run)."""

from pathlib import Path

import pytest

from ivus_tf.core.config import load_yaml
from ivus_tf.grid.config import GridConfig, expand_grid, load_grid_config
from ivus_tf.training.config import TrainConfig
from tfrecords_builder.phantom import PRESETS, PhantomConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
KINDS = {"paper_table1": GridConfig, "paper_lambda_sweep": GridConfig, "phantom_table1": GridConfig,
         "phantom_lambda_sweep": GridConfig,
         "phantom_": PhantomConfig, "paper": TrainConfig, "quickstart": TrainConfig}
BASES = {PhantomConfig: PRESETS["randomized"], TrainConfig: TrainConfig()}


def test_configs_folder_is_not_empty():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path):
    kind = next((cls for prefix, cls in KINDS.items() if path.name.startswith(prefix)), None)
    assert kind is not None, f"{path.name}: no dataclass known for this config name"
    if kind is GridConfig:
        grid, base = load_grid_config(path)
        assert expand_grid(grid, base, "grid_dir", str(path))  # every run's TrainConfig validates
        return
    config = load_yaml(kind, path, base=BASES[kind])  # training configs: also tests/test_train_config.py
    assert isinstance(config, kind)


def test_small_cpu_phantom_renders(tmp_path):
    import numpy as np

    from tfrecords_builder.phantom import render_case_frames

    config = load_yaml(PhantomConfig, Path(__file__).parents[1] / "configs" / "phantom_small_cpu.yaml")
    _, _, image, calcium, wall_lumen = next(render_case_frames(config, 0, 0, 1))
    assert image.shape == calcium.shape == wall_lumen.shape == (256, 256) and image.max() > 100
    assert np.all(wall_lumen[calcium] == 2)


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    """YAML 1.1 reads 2e-4 as a string; float fields accept it, other strings stay errors."""
    from ivus_tf.core.errors import InputError

    path = tmp_path / "p.yaml"
    path.write_text("image_size: 500\npixel_spacing_mm: 2e-2\n")
    assert load_yaml(PhantomConfig, path).pixel_spacing_mm == 0.02
    path.write_text("pixel_spacing_mm: fast\n")
    with pytest.raises(InputError, match="expected a number"):
        load_yaml(PhantomConfig, path)
