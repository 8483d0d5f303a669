"""ReMixMatch's distribution alignment against hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.distribution_alignment import DistributionAlignment


def test_alignment_uses_the_running_mean_of_batch_means():
    align = DistributionAlignment([3, 1])  # target [0.75, 0.25]
    # batch 1: mean p = [0.7, 0.3]; row [0.5, 0.5] -> [0.5*0.75/0.7, 0.5*0.25/0.3] normalised
    got = align(np.array([[0.5, 0.5], [0.9, 0.1]]))
    np.testing.assert_allclose(got, [[0.5625, 0.4375], [0.9204545, 0.0795455]], rtol=1e-4)
    # batch 2: mean [0.2, 0.8]; running mean over both batches [0.45, 0.55]
    got = align(np.array([[0.2, 0.8], [0.2, 0.8]]))
    np.testing.assert_allclose(got[0], [0.4782609, 0.5217391], rtol=1e-4)
    assert int(align.num_batches.numpy()) == 2


def test_history_window_drops_old_batches():
    align = DistributionAlignment([3, 1], history=1)
    align(np.array([[0.5, 0.5], [0.9, 0.1]]))
    np.testing.assert_allclose(align(np.array([[0.2, 0.8]])), [[0.75, 0.25]], rtol=1e-4)


def test_runs_in_a_graph_and_rejects_bad_targets():
    align = DistributionAlignment([1, 1])
    step = tf.function(lambda p: align(p))
    np.testing.assert_allclose(step(tf.constant([[0.2, 0.8]])), [[0.5, 0.5]], rtol=1e-4)
    with pytest.raises(ValueError, match="target_distribution"):
        DistributionAlignment([1, 0])
