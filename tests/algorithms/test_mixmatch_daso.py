"""MixMatch + DASO: blending after averaging and sharpening; no L_align."""

import numpy as np
import tensorflow as tf

from tests.algorithms.test_remixmatch_daso import set_prototypes
from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def test_blend_point_is_after_sharpening_at_the_averaged_argmax():
    model = tiny_daso(num_classes=2, algorithm="mixmatch_daso", seed=0, warmup_steps=0,
                      dist_temperature=1.0)
    features = set_prototypes(model, 1)  # q ~ [0, 1]
    model.histogram.closed_counts.assign([1, 3])  # v = [1/3, 1]
    # view 1 says class 1, the average (0.6, 0.4) says class 0: v[0] = 1/3 and
    # y' = 2/3 * sharpen(0.6, 0.4) + 1/3 * [0, 1]
    targets, _ = model.guess_targets(np.log([[0.3, 0.7]]), np.log([[0.9, 0.1]]), features,
                                     tf.constant(0, "int64"))
    sharpened = np.array([0.36, 0.16]) / 0.52
    np.testing.assert_allclose(targets, [2 / 3 * sharpened + [0, 1 / 3]], rtol=1e-4)


def test_trains_without_alignment_loss():
    model = tiny_daso(algorithm="mixmatch_daso", seed=1, warmup_steps=1, queue_size=8, histogram_period=1)
    model.compile()
    history = model.fit(as_dataset(synthetic_batches(3)), epochs=1, verbose=0)
    assert "loss_align" not in history.history and np.isfinite(history.history["loss"]).all()
    assert int(model.histogram.counts.numpy().sum()) == 8  # last step's pseudo-labels
