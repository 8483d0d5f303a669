"""MixMatch: averaged + sharpened guess, MSE consistency, training through user code."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def test_guess_averages_both_views_then_sharpens():
    model = tiny_daso(num_classes=2, algorithm="mixmatch", seed=0)
    # (0.3, 0.7) and (0.9, 0.1) average to (0.6, 0.4); squared and normalised
    targets, _ = model.guess_targets(np.log([[0.3, 0.7]]), np.log([[0.9, 0.1]]), None, tf.constant(0, "int64"))
    np.testing.assert_allclose(targets, [[0.36 / 0.52, 0.16 / 0.52]], rtol=1e-5)


def test_losses_and_training():
    model = tiny_daso(algorithm="mixmatch", seed=1, rampup_steps=0)
    model.compile()
    batches = synthetic_batches(2)
    logs, outputs = tf.function(model.train_step_with_outputs)(batches[0])
    assert set(logs) == {"loss", "loss_x", "loss_u", "mask"}
    assert float(logs["loss"]) == pytest.approx(float(logs["loss_x"]) + float(logs["loss_u"]), rel=1e-5)
    history = model.fit(as_dataset(batches), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
