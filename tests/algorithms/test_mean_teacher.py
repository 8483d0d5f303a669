"""Mean Teacher: the consistency target is the EMA teacher's softmax on the teacher view."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def softmax(logits):
    logits = np.asarray(logits, "float64")
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_consistency_target_and_loss():
    model = tiny_daso(algorithm="meanteacher", rampup_steps=0, lambda_u=50.0)
    model.online_network.classifier.kernel.assign(model.online_network.classifier.kernel * 5)
    (x_l, y_l), (u_w, u_s, _) = synthetic_batches(1)[0]
    batch = model.unpack_train_batch(((x_l, y_l), (u_w, u_s)))
    losses, outputs = model.forward_and_compute_losses(batch, tf.constant(0, "int64"))
    teacher = softmax(model.ema_network(u_w, training=True))  # EMA on the teacher (weak) view
    student = softmax(model.online_network(np.concatenate([x_l, u_s]), training=True))[len(x_l):]
    np.testing.assert_array_equal(outputs["pseudo_labels"], teacher.argmax(-1))
    assert float(losses["loss_u"]) == pytest.approx(50.0 * np.mean((student - teacher) ** 2), rel=1e-4)
    assert float(losses["loss"]) == pytest.approx(float(losses["loss_x"]) + float(losses["loss_u"]), rel=1e-6)


def test_trains_and_ramps_up():
    model = tiny_daso(algorithm="meanteacher")
    model.compile()
    history = model.fit(as_dataset(synthetic_batches(2)), epochs=1, verbose=0)
    assert history.history["loss_u"][0] == pytest.approx(0.0, abs=1e-6)  # ramp(0..1) ~ 0
    assert np.isfinite(history.history["loss"]).all()
