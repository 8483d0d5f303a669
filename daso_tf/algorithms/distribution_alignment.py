"""ReMixMatch's distribution alignment (reference ``lib/models/dist_align.py``)."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from daso_tf.algorithms.base import all_gather

DISTRIBUTION_ALIGNMENT_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="daso_tf")
class DistributionAlignment(keras.layers.Layer):
    """``p~ = normalize(p * (target + eps) / (mean_p + eps))``.

    ``mean_p`` is the mean prediction over the last ``history`` batches, the current batch
    included (the reference keeps a list of 128 batches and averages all their rows; with
    equal batch sizes that is the mean of the per-batch means kept here). ``target`` is the
    labeled class prior raised to ``temperature`` (1.0; ``call`` may pass another, as
    CReST+'s progressive alignment does) and renormalised.

    Args:
        target_distribution: `[K]` labeled class counts or prior.
        history: number of past batches averaged (128).
        temperature: exponent of the target distribution (1.0).
        epsilon: 1e-6.

    State (non-trainable, checkpointed): ``batch_means`` [history, K] ring buffer,
    ``num_batches`` [] int64.
    """

    def __init__(self, target_distribution, history=128, temperature=1.0,
                 epsilon=DISTRIBUTION_ALIGNMENT_EPSILON, **kwargs):
        super().__init__(**kwargs)
        target = np.asarray(target_distribution, dtype="float64").reshape(-1)
        if target.size < 2 or (target <= 0).any():
            raise ValueError(f"target_distribution must hold >= 2 positive values; got {target}.")
        if int(history) < 1:
            raise ValueError(f"history must be >= 1; got {history}.")
        self.target_distribution = [float(t) for t in target]
        self.history = int(history)
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        num_classes = target.size
        state = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        self.batch_means = self.add_weight(shape=(self.history, num_classes), initializer="zeros",
                                           dtype=self.variable_dtype, name="batch_means", **state)
        self.num_batches = self.add_weight(shape=(), initializer="zeros", dtype="int64",
                                           name="num_batches", **state)
        self.built = True  # all state exists; an unbuilt layer would be traced an extra time

    def target(self, dtype, temperature=None):
        """``target_distribution ** t`` renormalised; ``t`` is ``temperature`` (a tensor, e.g.
        CReST+'s progressive schedule) or, when None, the layer's own."""
        if temperature is None:
            target = np.asarray(self.target_distribution) ** self.temperature
            return ops.convert_to_tensor(target / target.sum(), dtype=dtype)
        target = ops.power(ops.convert_to_tensor(self.target_distribution, dtype=dtype),
                           ops.cast(temperature, dtype))
        return target / ops.sum(target)

    def call(self, probs, temperature=None):
        """Push this batch's mean prediction and return the aligned, renormalised probs
        (target temperature: ``temperature`` if given, else the layer's)."""
        probs = ops.stop_gradient(ops.convert_to_tensor(probs))
        dtype = probs.dtype
        batch_mean = ops.mean(ops.cast(all_gather(probs), self.variable_dtype), axis=0)
        slot = ops.cast(self.num_batches.value % self.history, "int32")
        means = tf.tensor_scatter_nd_update(self.batch_means.value, [[slot]], batch_mean[None])
        # The count update must wait for the data: a step aborted by an exhausted dataset
        # could otherwise still run this data-independent assign.
        with tf.control_dependencies([means]):
            num_batches = tf.identity(self.num_batches.value) + 1
        filled = ops.minimum(num_batches, self.history)
        self.batch_means.assign(means)
        self.num_batches.assign(num_batches)
        mean_probs = ops.sum(means, axis=0) / ops.cast(filled, means.dtype)
        eps = ops.convert_to_tensor(self.epsilon, dtype)
        aligned = probs * (self.target(dtype, temperature) + eps) / (ops.cast(mean_probs, dtype) + eps)
        return aligned / ops.sum(aligned, axis=-1, keepdims=True)

    def get_config(self):
        config = super().get_config()
        config.update(target_distribution=self.target_distribution, history=self.history,
                      temperature=self.temperature, epsilon=self.epsilon)
        return config
