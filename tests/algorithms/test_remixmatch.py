"""ReMixMatch: target = sharpen(DA(p)), the loss terms, layouts, training through user code."""

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.remixmatch import ROTATION_HEAD
from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def test_guess_is_alignment_then_sharpening():
    model = tiny_daso(num_classes=2, algorithm="remixmatch", labeled_class_counts=[1, 3], seed=0)
    # p = [0.6, 0.4]; one batch so mean p = p; DA -> target [0.25, 0.75]; sharpen T=0.5 ->
    # [0.0625, 0.5625] / 0.625 = [0.1, 0.9]
    targets, outputs = model.guess_targets(np.log([[0.6, 0.4]]), None, tf.constant(0, "int64"))
    np.testing.assert_allclose(targets, [[0.1, 0.9]], rtol=1e-4)
    assert int(outputs["linear_pseudo_labels"][0]) == 0


def test_trains_with_three_or_two_views_and_evaluates_with_the_classifier():
    model = tiny_daso(algorithm="remixmatch", seed=1, rampup_steps=0)
    model.compile()
    batches = synthetic_batches(2)
    three_views = [((x, y), (u_w, u_s, u_s[:, ::-1], u_true)) for (x, y), (u_w, u_s, u_true) in batches]
    step = tf.function(model.train_step_with_outputs)
    model.optimizer.build(model.trainable_variables)
    logs, outputs = step(three_views[0])
    assert {"loss", "loss_x", "loss_u", "loss_kl", "loss_rot"} <= set(logs)
    total = sum(float(logs[k]) for k in ("loss_x", "loss_u", "loss_kl", "loss_rot"))
    assert float(logs["loss"]) == pytest.approx(total, rel=1e-5)
    assert 0.5 <= float(outputs["mixup_lambda"]) <= 1.0
    history = model.fit(as_dataset(batches), epochs=1, verbose=0)  # standard (u_w, u_s) layout
    assert np.isfinite(history.history["loss"]).all()
    assert int(model.aligner.num_batches.numpy()) == 3
    x = batches[0][0][0]
    np.testing.assert_allclose(model(x), model.ema_network.classifier(model.ema_network.features(x)), rtol=1e-6)
    assert any(ROTATION_HEAD in v.path for v in model.trainable_variables)
    with pytest.raises(ValueError, match="unlabeled views"):
        model.unpack_train_batch(((x, batches[0][0][1]), (x, x, x, x)))


def test_needs_labeled_counts_for_alignment():
    with pytest.raises(ValueError, match="distribution_alignment"):
        tiny_daso(algorithm="remixmatch", labeled_class_counts=None)
    tiny_daso(algorithm="remixmatch", labeled_class_counts=None, distribution_alignment=False)
