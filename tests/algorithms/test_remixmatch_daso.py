"""ReMixMatch + DASO: blending AFTER alignment and sharpening, L_align on the first strong view."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def set_prototypes(model, feature):
    dim = model.feature_dim
    prototypes = np.zeros((2, dim), "float32")
    prototypes[0, 0] = prototypes[1, 1] = 1.0
    model.queue.prototype_vectors.assign(prototypes)
    features = np.zeros((1, dim), "float32")
    features[0, feature] = 1.0
    return features


def test_blend_point_is_after_alignment_and_sharpening():
    model = tiny_daso(num_classes=2, algorithm="remixmatch_daso", labeled_class_counts=[1, 3], seed=0,
                      warmup_steps=0, dist_temperature=1.0)
    features = set_prototypes(model, 0)  # q ~ [1, 0]
    model.histogram.closed_counts.assign([3, 1])  # v = [1, 1/3]
    # p = [0.6, 0.4] (argmax 0) -> DA -> [0.25, 0.75] -> sharpen -> [0.1, 0.9] (argmax 1):
    # v[1] = 1/3, so y' = 2/3 [0.1, 0.9] + 1/3 [1, 0] = [0.4, 0.6]
    targets, outputs = model.guess_targets(np.log([[0.6, 0.4]]), features, tf.constant(0, "int64"))
    np.testing.assert_allclose(targets, [[0.4, 0.6]], rtol=1e-4)
    assert int(outputs["semantic_pseudo_labels"][0]) == 0
    # before the warm-up ends: the plain ReMixMatch target
    model.warmup_steps = 5
    targets, _ = model.guess_targets(np.log([[0.6, 0.4]]), features, tf.constant(0, "int64"))
    np.testing.assert_allclose(targets, [[0.1, 0.9]], rtol=1e-4)


def test_alignment_loss_on_the_first_strong_view_and_histogram():
    model = tiny_daso(algorithm="remixmatch_daso", seed=2, warmup_steps=1, queue_size=8,
                      histogram_period=1)
    model.compile()
    batches = synthetic_batches(2)
    step = tf.function(model.train_step_with_outputs)
    model.optimizer.build(model.trainable_variables)
    logs0, _ = step(batches[0])
    assert float(logs0["loss_align"]) == 0.0  # warm-up
    logs1, outputs1 = step(batches[1])
    assert float(logs1["loss_align"]) > 0.0
    counts = np.bincount(outputs1["pseudo_labels"].numpy(), minlength=model.num_classes)
    np.testing.assert_array_equal(model.histogram.counts.numpy(), counts)
    history = model.fit(as_dataset(batches), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
