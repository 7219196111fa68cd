"""Training: configs, the three schemes of Bargsten et al. (CDBME 2021), resumable phases, the run orchestrator.

`config` (TrainConfig), `schemes` (phases as data), `phase` (one fit), `callbacks` (NaN guard, selection and
checkpoint), `state` (what a run keeps to resume), `phantom_cache` (the embedded default data), `run`
(`run_training`). The CLI is `python -m ivus_tf.train`. Importing this package does not import TensorFlow;
`phase` and `callbacks` do, and `run_training` when called. It exports only the config and schemes, so that
`ivus_tf.run_folder` (which `run` imports) can load a `TrainConfig` without importing `run` back.
"""

from ivus_tf.training.config import TrainConfig, load_config
from ivus_tf.training.schemes import Phase, phases_of

__all__ = ["Phase", "TrainConfig", "load_config", "phases_of"]
