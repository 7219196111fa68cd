"""The paper's report from a grid of training runs: `python -m ivus_tf.report GRID_DIR` -> GRID_DIR/report/.

`results` (the results.jsonl schema, reader and writer), `stats` (mean +- SD, Welch's t-test, lambda choice),
`table1`, `figures` (lambda sweep), `examples` (contours on test frames), `inference` (time and memory),
`assemble` (`make_report`). Importing this package is light: TensorFlow loads only for the example figure and the
inference measurements.
"""

from ivus_tf.report.assemble import make_report
from ivus_tf.report.results import (RESULT_FIELDS, make_result_line, metrics_from_run, read_results,
                                    validate_result, validation_calcium_dice)

__all__ = ["RESULT_FIELDS", "make_report", "make_result_line", "metrics_from_run", "read_results",
           "validate_result", "validation_calcium_dice"]
