"""The learning-rate schedule of a training phase (`lr_schedule`)."""

import numpy as np
import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.training.callbacks import learning_rate_callbacks, poly_learning_rate
from ivus_tf.training.config import TrainConfig, load_config


def test_poly_matches_nnunet_formula_by_hand():
    rate = poly_learning_rate(1e-2, 4)
    assert [rate(e) for e in range(4)] == pytest.approx([1e-2, 1e-2 * 0.75 ** 0.9, 1e-2 * 0.5 ** 0.9,
                                                         1e-2 * 0.25 ** 0.9])
    assert rate(10) == 0.0  # never negative past the end


def _rates_seen_by_fit(schedule: str, epochs: int, initial_epoch: int = 0) -> list[float]:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    x = np.zeros((4, 2), np.float32)
    model.fit(x, x[:, :1], epochs=epochs, initial_epoch=initial_epoch, verbose=0,
              callbacks=[*learning_rate_callbacks(schedule, 0.1, epochs), Record()])
    return seen


def test_fit_trains_each_epoch_at_the_scheduled_rate_and_a_resumed_phase_stays_on_the_curve():
    rate = poly_learning_rate(0.1, 5)
    assert _rates_seen_by_fit("poly", 5) == pytest.approx([rate(e) for e in range(5)], rel=1e-6)
    assert _rates_seen_by_fit("poly", 5, initial_epoch=3) == pytest.approx([rate(3), rate(4)], rel=1e-6)
    assert _rates_seen_by_fit("constant", 3) == pytest.approx([0.1] * 3, rel=1e-6)


def test_config_field_is_checked_and_constant_keeps_the_run_hash():
    with pytest.raises(InputError, match="lr_schedule 'cosine' is unknown"):
        load_config(overrides={"lr_schedule": "cosine"})
    assert TrainConfig().fingerprint() == TrainConfig(lr_schedule="constant").fingerprint()
    assert TrainConfig().fingerprint() != TrainConfig(lr_schedule="poly").fingerprint()
