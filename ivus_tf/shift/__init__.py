"""The shift test: a trained model on phantom frames rendered in a way it never saw, next to its in-distribution
score and the floors (issue 11, item 5). `python -m ivus_tf.shift RUN_DIR` (docs/shift_test.md).

`testset` draws and caches the test sets, `predictors` loads the model and the floors, `frames` scores frames,
`score` ties them together (`score_on_preset`), `report` writes shift.json and shift.md.
"""

from ivus_tf.shift.score import DEFAULT_SEED, score_on_preset

__all__ = ["DEFAULT_SEED", "score_on_preset"]
