"""Mean Teacher + DASO: the teacher target is blended with q of the EMA features; no L_align."""

import numpy as np
import tensorflow as tf

from daso_tf.pseudo_labels import blend_pseudo_labels, distribution_weights, semantic_probs
from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def test_teacher_target_is_blended_after_warmup():
    model = tiny_daso(algorithm="meanteacher_daso", warmup_steps=0, queue_size=8, histogram_period=1)
    model.histogram.closed_counts.assign([5, 3, 1, 0])
    (x_l, y_l), (u_w, u_s, _) = synthetic_batches(1)[0]
    batch = model.unpack_train_batch(((x_l, y_l), (u_w, u_s)))
    targets, outputs = model.teacher_targets(batch, tf.constant(0, "int64"))
    features = model.ema_network.features(np.concatenate([x_l, u_w]), training=True)[len(x_l):]
    p = tf.nn.softmax(model.ema_network.classifier(features))
    q = semantic_probs(features, model.queue.prototypes, 0.05)  # queue already holds x_l
    expected = blend_pseudo_labels(p, q, distribution_weights([5, 3, 1, 0], 1.5))
    np.testing.assert_allclose(targets, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(outputs["linear_pseudo_labels"], np.argmax(p, -1))
    assert int(model.queue.counts.numpy().sum()) == len(y_l)


def test_trains_without_alignment_loss():
    model = tiny_daso(algorithm="meanteacher_daso", warmup_steps=1, queue_size=8, histogram_period=1)
    model.compile()
    history = model.fit(as_dataset(synthetic_batches(2)), epochs=1, verbose=0)
    assert "loss_align" not in history.history and np.isfinite(history.history["loss"]).all()
