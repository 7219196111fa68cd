"""The paper's report from a grid of training runs: `python -m ivus_tf.report GRID_DIR` -> GRID_DIR/report/.

It reads GRID_DIR/results.jsonl through the grid's schema (`ivus_tf.grid.results`) and each run folder through
`ivus_tf.run_folder.RunFolder`. `stats` (mean +- SD, Welch's t-test, lambda choice), `table1`, `figures` (lambda
sweep), `examples` (contours on test frames), `empty_frames`, `inference` (time and memory), `assemble`
(`make_report`). Importing this package is light: TensorFlow loads only for the example figure and the inference
measurements.
"""

from ivus_tf.report.assemble import make_report

__all__ = ["make_report"]
