"""Tumbling-window histogram of the final pseudo-labels (DASO's class distribution m).

Reference semantics (ytaek-oh/daso ``lib/algorithm/daso.py`` and
``lib/utils/dist_logger.py``; docs/algorithm.md section 2): every training step,
warm-up included, pushes all of its final (blended, unmasked) pseudo-labels; after every
``period``-th step the window's per-class counts become the current histogram and the
window is cleared. The reference skips the close on the very last training step
(``t + 1 < max_iter``); callers that need that pass ``allow_close=False`` there.

State: non-trainable variables with ``aggregation="only_first_replica"`` (pass the
all-gathered pseudo-labels under a distribution strategy), updated functionally.
"""

import keras
import tensorflow as tf

from daso_tf._validation import positive_int


class PseudoLabelHistogram(keras.layers.Layer):
    """Counts pseudo-labels over tumbling windows of ``period`` updates.

    Args:
        num_classes: number of classes K.
        period: number of `update` calls per window (the reference's
            ``PL_DIST_UPDATE_PERIOD``, 100).
        **kwargs: standard `keras.layers.Layer` arguments. `distribution` is returned
            in the layer's variable dtype (float32, or float64 under a float64 policy).

    State (non-trainable variables, int64):
        ``window_counts`` [K]: counts of the window being filled.
        ``closed_counts`` [K]: counts of the last closed window (zeros before the first).
        ``num_updates`` []: `update` calls so far; a window closes when it reaches a
            multiple of ``period``.
    """

    def __init__(self, num_classes, period, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = positive_int(num_classes, "num_classes", "PseudoLabelHistogram")
        self.period = positive_int(period, "period", "PseudoLabelHistogram")
        self.build()

    def build(self, input_shape=None):
        state = dict(
            trainable=False, autocast=False, aggregation="only_first_replica",
            initializer="zeros", dtype="int64",
        )
        self.window_counts = self.add_weight(shape=(self.num_classes,), name="window_counts", **state)
        self.closed_counts = self.add_weight(shape=(self.num_classes,), name="closed_counts", **state)
        self.num_updates = self.add_weight(shape=(), name="num_updates", **state)

    @property
    def counts(self):
        """`[num_classes]` int64 counts of the last closed window (zeros before the first)."""
        return tf.convert_to_tensor(self.closed_counts.value)

    @property
    def distribution(self):
        """The normalised histogram m (`[num_classes]`, sums to 1).

        Uniform while no window has closed or the closed window was empty, so that a
        warm-up shorter than ``period`` gives finite class weights (the reference
        divides by zero there).
        """
        dtype = self.variable_dtype
        counts = tf.cast(self.counts, dtype)
        total = tf.reduce_sum(counts)
        uniform = tf.fill([self.num_classes], tf.constant(1.0 / self.num_classes, dtype))
        return tf.where(total > 0, counts / tf.maximum(total, 1), uniform)

    def update(self, pseudo_labels, allow_close=True):
        """Counts one step's pseudo-labels; closes the window on every ``period``-th call.

        Args:
            pseudo_labels: `[B]` integer final pseudo-labels (all of them, unmasked; the
                all-gathered global batch under a distribution strategy). Labels
                outside ``[0, num_classes)`` (e.g. -1 padding) are not counted.
            allow_close: bool (Python or scalar tensor). False skips a close that would
                happen at this call: the window keeps accumulating until the next
                multiple of ``period`` (the reference's last-step behaviour).

        Returns:
            The `counts` after this update.
        """
        labels = tf.cast(tf.reshape(tf.convert_to_tensor(pseudo_labels), [-1]), tf.int32)
        batch_counts = tf.reduce_sum(tf.one_hot(labels, self.num_classes, dtype=tf.int64), axis=0)
        window = self.window_counts.value + batch_counts
        num_updates = self.num_updates.value + 1
        close = tf.equal(num_updates % self.period, 0) & tf.cast(allow_close, tf.bool)
        closed = tf.where(close, window, self.closed_counts.value)
        self.closed_counts.assign(closed)
        self.window_counts.assign(tf.where(close, tf.zeros_like(window), window))
        self.num_updates.assign(num_updates)
        return closed

    def call(self, pseudo_labels):
        """Same as `update`."""
        return self.update(pseudo_labels)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, period=self.period)
        return config
