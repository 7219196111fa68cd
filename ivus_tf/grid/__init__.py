"""The cross-validation grid: `python -m ivus_tf.grid --config GRID.yaml --out GRID_DIR`.

`config` (GridConfig, expansion into named runs, shards), `results` (the results.jsonl schema, its writer and
reader), `ledger` (results.jsonl shared by many processes: atomic appends under a lock, run claims), `runner`
(`run_grid`: one `run_training` call per run, resumable, progress), `devices` (one worker process per GPU).
Importing this package does not import TensorFlow.
"""

from ivus_tf.grid.config import GridConfig, GridRun, expand_grid, load_grid_config, run_id, shard_runs
from ivus_tf.grid.runner import prepare_grid, run_grid

__all__ = ["GridConfig", "GridRun", "expand_grid", "load_grid_config", "prepare_grid", "run_grid", "run_id",
           "shard_runs"]
