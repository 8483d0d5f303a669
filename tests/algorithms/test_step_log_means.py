"""StepLogMeans and the train logs: means of every step since the last reset, kept on device."""

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.step_log_means import StepLogMeans
from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def test_means_since_the_last_reset():
    means = StepLogMeans(capacity=3)
    update = tf.function(means.update_state)
    for loss, mask in ((1.0, 0.0), (2.0, 0.5), (6.0, 1.0)):
        update({"loss": tf.constant(loss), "mask": mask})
    assert {k: float(v) for k, v in means.result().items()} == {"loss": 3.0, "mask": 0.5}
    means.reset_state()
    update({"loss": tf.constant(4.0), "mask": 1.0})
    assert float(means.result()["loss"]) == 4.0 and float(means.count.numpy()) == 1.0


def test_names_are_fixed_and_bounded():
    means = StepLogMeans(capacity=2)
    with pytest.raises(ValueError, match="holds 2 scalars"):
        means.update_state({"a": 1.0, "b": 2.0, "c": 3.0})
    means.update_state({"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="changed"):
        means.update_state({"a": 1.0})


def test_fit_logs_are_epoch_means_of_the_per_step_logs():
    batches = synthetic_batches(4)
    reference, model = tiny_daso(warmup_steps=0), tiny_daso(warmup_steps=0)
    model.set_weights(reference.get_weights())  # identical models
    reference.compile()
    model.compile()
    step = tf.function(reference.train_step_with_outputs)
    per_step = []
    for (x_l, y_l), (u_w, u_s, _) in batches:
        logs, _ = step(((tf.constant(x_l), tf.constant(y_l)), (tf.constant(u_w), tf.constant(u_s))))
        per_step.append({k: float(v) for k, v in logs.items()})
    # fit resets the means when an epoch begins: epoch e reports the mean of its 2 steps.
    history = model.fit(as_dataset(batches), epochs=2, steps_per_epoch=2, verbose=0).history
    assert set(history) == {"loss", "loss_x", "loss_u", "loss_align", "mask"}
    for key, values in history.items():
        expected = [np.mean([s[key] for s in per_step[:2]]), np.mean([s[key] for s in per_step[2:]])]
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7, err_msg=key)
    assert per_step[0]["loss_align"] > 0  # DASO active from step 0: not a trivially equal zero
