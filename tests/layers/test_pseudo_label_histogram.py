import numpy as np
import pytest
import tensorflow as tf

from daso_tf.layers import PseudoLabelHistogram


def test_hand_computed_tumbling_windows():
    histogram = PseudoLabelHistogram(num_classes=3, period=2)
    histogram.update([0, 0, 1])
    np.testing.assert_array_equal(histogram.counts, [0, 0, 0])  # nothing closed yet
    histogram.update([2])
    np.testing.assert_array_equal(histogram.counts, [2, 1, 1])  # window 1 closed
    histogram.update([1])
    np.testing.assert_array_equal(histogram.counts, [2, 1, 1])  # window 2 still open
    histogram.update([1, 1])
    np.testing.assert_array_equal(histogram.counts, [0, 3, 0])  # window 1 does not leak in


def test_distribution_is_normalised_and_uniform_when_no_window_has_counts():
    histogram = PseudoLabelHistogram(num_classes=4, period=1)
    np.testing.assert_allclose(histogram.distribution, [0.25] * 4)  # before the first close
    histogram.update([3, 3, 0, 3])
    np.testing.assert_allclose(histogram.distribution, [0.25, 0.0, 0.0, 0.75])
    histogram.update([-1, -1])  # padding only: the closed window is empty
    np.testing.assert_array_equal(histogram.counts, [0, 0, 0, 0])
    distribution = histogram.distribution.numpy()
    assert np.all(np.isfinite(distribution))
    np.testing.assert_allclose(distribution, [0.25] * 4)


def test_allow_close_false_skips_one_close_like_the_reference_last_step():
    histogram = PseudoLabelHistogram(num_classes=3, period=2)
    histogram.update([0])
    histogram.update([1], allow_close=False)
    np.testing.assert_array_equal(histogram.counts, [0, 0, 0])
    histogram.update([2])  # 3rd call: not a multiple of the period
    np.testing.assert_array_equal(histogram.counts, [0, 0, 0])
    histogram.update([2], allow_close=tf.constant(True))
    np.testing.assert_array_equal(histogram.counts, [1, 1, 2])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_inside_tf_function_matches_numpy_windows(jit_compile):
    num_classes, period = 5, 3
    rng = np.random.default_rng(3)
    histogram = PseudoLabelHistogram(num_classes, period)
    update = tf.function(histogram.update, jit_compile=jit_compile)
    window, expected = np.zeros(num_classes), np.zeros(num_classes)
    for step in range(8):
        labels = rng.integers(0, num_classes, 6)
        got = update(tf.constant(labels))
        window += np.bincount(labels, minlength=num_classes)
        if (step + 1) % period == 0:
            expected, window = window.copy(), np.zeros(num_classes)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(histogram.counts, expected)


def test_float64_policy_distribution_and_checkpoint(tmp_path):
    histogram = PseudoLabelHistogram(3, 1, dtype="float64")
    histogram.update([0, 1, 1])
    assert histogram.distribution.dtype == tf.float64
    np.testing.assert_allclose(histogram.distribution, [1 / 3, 2 / 3, 0], rtol=1e-15)
    assert histogram.trainable_weights == []

    path = tf.train.Checkpoint(histogram=histogram).write(str(tmp_path / "ckpt"))
    restored = PseudoLabelHistogram.from_config(histogram.get_config())
    tf.train.Checkpoint(histogram=restored).read(path).assert_consumed()
    np.testing.assert_array_equal(restored.counts, [1, 2, 0])
    np.testing.assert_array_equal(restored.num_updates.numpy(), 1)


def test_invalid_arguments_name_the_argument():
    with pytest.raises(ValueError, match="period"):
        PseudoLabelHistogram(10, 0)
    with pytest.raises(ValueError, match="num_classes"):
        PseudoLabelHistogram("ten", 100)
