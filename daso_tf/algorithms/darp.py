"""DARP: distribution aligning refinery of pseudo-labels (Kim et al., NeurIPS 2020), as the
DASO reference runs it (``lib/algorithm/darp_reproduce.py``).

DARP keeps the latest prediction of every unlabeled sample, P_orig [N_u, K], and, every
``period`` steps after a warm-up, refines the whole set so that the refined pseudo-labels
P_ref (rows sum to 1) have column sums close to a target count per class c [K]:

  a. per-class scaling: for each class k (K-1 down to 0) the n_k = int(alpha * c_k) samples
     with the largest P_orig[:, k] get H[., k] = 1; kappa_k is the sum of their P_orig[:, k]
     and v_k = (c_k + 1e-6) / (kappa_k + 1e-6);
  b. A = row-normalise(P_orig * H * v + 1e-6)   (rows without any H entry become uniform);
  c. the dual problem, solved per class with ``scipy.optimize.newton``'s secant iteration
     (x0 = the previous solution, tol 0.1, 30 iterations), ``iterations`` (10) times:
        e_n = -sum_k A_nk log(A_nk + 1e-6), w_n = 1 / e_n, A~ = A / e (Euler's number)
        Y_nk = exp(-1 / w_n) initially; then repeat:
          x_n = 1 / sum_k A~_nk Y_nk
          y_k = root of  g_k(y) = sum_n A~_nk x_n exp(-y / w_n) - c_k    (for every k)
          Y_nk = exp(-y_k / w_n)
        M = A~ * x * Y with x from the final Y  -> P_ref.

The solve is NumPy (float64) on the host: ``DARP`` calls it through ``tf.numpy_function``
inside the train step, exactly at the steps the reference does (the store and the solve
see the current batch), so a step that uses DARP cannot be XLA-compiled. The secant
iteration is re-implemented here (``secant_root``), step for step, so SciPy is not needed.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from daso_tf.algorithms.base import all_gather

EPSILON = 1e-6
SECANT_TOLERANCE = 0.1  # scipy.optimize.newton(tol=1e-1) in the reference
SECANT_MAX_ITERATIONS = 30  # its maxiter (num_newton)


def secant_root(func, x0, tol=SECANT_TOLERANCE, maxiter=SECANT_MAX_ITERATIONS):
    """A root of ``func`` near ``x0``: ``scipy.optimize.newton(func, x0, tol=tol,
    maxiter=maxiter)`` without a derivative (its secant method), step for step.

    The second point is ``x0 * (1 + 1e-4) +- 1e-4``; the two points are ordered so that the
    one with the smaller |func| comes second; it stops when a new point is within ``tol`` of
    the previous one. Raises RuntimeError, as SciPy does, when it does not converge within
    ``maxiter`` iterations or the secant becomes flat between two distinct points.
    """
    p0 = float(x0)
    p1 = p0 * (1 + 1e-4)
    p1 += 1e-4 if p1 >= 0 else -1e-4
    q0, q1 = func(p0), func(p1)
    if abs(q1) < abs(q0):
        p0, p1, q0, q1 = p1, p0, q1, q0
    p = p1
    for iteration in range(maxiter):
        if q1 == q0:
            if p1 != p0:
                raise RuntimeError(f"Tolerance of {p1 - p0} reached. Failed to converge after "
                                   f"{iteration + 1} iterations, value is {p1}.")
            return (p1 + p0) / 2.0
        if abs(q1) > abs(q0):
            p = (-q0 / q1 * p1 + p0) / (1 - q0 / q1)
        else:
            p = (-q1 / q0 * p0 + p1) / (1 - q1 / q0)
        if p == p1 or abs(p - p1) <= tol:  # np.isclose(p, p1, rtol=0, atol=tol)
            return p
        p0, q0 = p1, q1
        p1 = p
        q1 = func(p1)
    raise RuntimeError(f"Failed to converge after {maxiter} iterations, value is {p}.")


def class_scaling(pseudo_orig, target_counts, alpha):
    """Step a: (H [N, K] of 0/1, v [K]). Ties in P_orig keep the lower index first."""
    probs = np.asarray(pseudo_orig, dtype="float64")
    num_classes = probs.shape[1]
    selected = np.zeros_like(probs)
    kappa = np.zeros(num_classes)
    for k in reversed(range(num_classes)):
        # int(alpha * c_k) of float32 values, as the reference's float32 tensor product
        count = int(np.float32(alpha) * np.float32(target_counts[k]))
        top = np.argsort(-probs[:, k], kind="stable")[:count]
        selected[top, k] = 1.0
        kappa[k] = probs[top, k].sum()
    weights = (np.asarray(target_counts, dtype="float64") + EPSILON) / (kappa + EPSILON)
    return selected, weights


def solve_dual(probs, target_counts, iterations):
    """Step c on the rescaled A [N, K]: the refined pseudo-labels M [N, K] (float64)."""
    probs = np.asarray(probs, dtype="float64")
    target = np.asarray(target_counts, dtype="float64")
    weights = 1.0 / -np.sum(probs * np.log(probs + EPSILON), axis=1)  # w_n = 1 / entropy_n
    scaled = probs / math.e
    columns = np.exp(-1.0 / weights)[:, None] * np.ones_like(probs)  # Y with the dual nu = 1
    previous = np.zeros(probs.shape[1])
    for _ in range(iterations):
        rows = 1.0 / np.sum(scaled * columns, axis=1)
        previous = np.array([
            secant_root(lambda y, k=k: np.sum(scaled[:, k] * rows * np.exp(-y / weights)) - target[k],
                        previous[k])
            for k in range(probs.shape[1])])
        columns = np.exp(-previous[None, :] / weights[:, None])
    rows = 1.0 / np.sum(scaled * columns, axis=1)
    return scaled * rows[:, None] * columns


def refine_pseudo_labels(pseudo_orig, target_counts, alpha=2.0, iterations=10):
    """Steps a-c on the whole set: P_orig [N, K] -> P_ref [N, K] (float64)."""
    selected, weights = class_scaling(pseudo_orig, target_counts, alpha)
    rescaled = np.asarray(pseudo_orig, dtype="float64") * selected * weights[None, :] + EPSILON
    rescaled /= rescaled.sum(axis=1, keepdims=True)
    return solve_dual(rescaled, target_counts, iterations)


@keras.saving.register_keras_serializable(package="daso_tf")
class DARP(keras.layers.Layer):
    """DARP's state and per-step rule: ``refined = darp(probs, indices)``.

    Each call (one training step): counter s += 1; P_orig[indices] = probs; then
      s <= warmup_steps:        returns probs (warm-up; P_orig is still updated),
      s % period == 0:          refines the whole set (module docstring) into P_ref and
                                returns P_ref[indices],
      otherwise:                returns P_ref[indices] (possibly stale; uniform before the
                                first solve, as in the reference).

    Args:
        num_samples: N_u, the size of the unlabeled set (indices lie in [0, N_u)).
        target_counts: c [K], the target number of samples per class (counts, not a
            distribution: n_k = int(alpha * c_k)).
        warmup_steps: steps before the first refinement (reference: int(0.4 * total steps)).
        period: steps between refinements (10).
        alpha: the scaling's selection factor (2.0).
        iterations: iterations of the dual solve (10).

    State (non-trainable, checkpointed): ``pseudo_orig`` and ``pseudo_refined`` [N_u, K]
    (initially 1/K), ``counter`` (int64). Under several replicas the probabilities and
    indices of the global batch are gathered, so every replica holds the same state.
    """

    # tf.numpy_function cannot be XLA-compiled: Keras' jit_compile="auto" then stays off.
    supports_jit = False

    def __init__(self, num_samples, target_counts, warmup_steps, period=10, alpha=2.0, iterations=10,
                 **kwargs):
        super().__init__(**kwargs)
        target = np.asarray(target_counts, dtype="float64").reshape(-1)
        if target.size < 2 or not np.isfinite(target).all() or (target < 0).any():
            raise ValueError(f"target_counts must hold >= 2 finite, non-negative counts; got {target}.")
        if int(num_samples) < 1 or int(period) < 1 or int(iterations) < 1 or int(warmup_steps) < 0 \
                or float(alpha) <= 0:
            raise ValueError(f"DARP needs num_samples, period, iterations >= 1, warmup_steps >= 0, alpha > 0; got "
                             f"{num_samples}, {period}, {iterations}, {warmup_steps}, {alpha}.")
        self.num_samples = int(num_samples)
        self.target_counts = [float(c) for c in target]
        self.warmup_steps = int(warmup_steps)
        self.period = int(period)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        num_classes = target.size
        state = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        uniform = keras.initializers.Constant(1.0 / num_classes)
        self.pseudo_orig = self.add_weight(shape=(self.num_samples, num_classes), initializer=uniform,
                                           dtype=self.variable_dtype, name="pseudo_orig", **state)
        self.pseudo_refined = self.add_weight(shape=(self.num_samples, num_classes), initializer=uniform,
                                              dtype=self.variable_dtype, name="pseudo_refined", **state)
        self.counter = self.add_weight(shape=(), initializer="zeros", dtype="int64", name="counter", **state)
        self.built = True

    def refine(self, pseudo_orig):
        """The host-side solve (NumPy): P_orig -> P_ref in the state's dtype."""
        refined = refine_pseudo_labels(pseudo_orig, self.target_counts, self.alpha, self.iterations)
        return refined.astype(pseudo_orig.dtype)

    def call(self, probs, indices):
        probs = ops.stop_gradient(ops.convert_to_tensor(probs))
        dtype = self.pseudo_orig.dtype
        gathered_indices = ops.cast(all_gather(ops.convert_to_tensor(indices)), "int64")
        pseudo_orig = tf.tensor_scatter_nd_update(
            self.pseudo_orig.value, gathered_indices[:, None], ops.cast(all_gather(probs), dtype))
        # The counter must wait for the data (see DistributionAlignment.call).
        with tf.control_dependencies([pseudo_orig]):
            counter = tf.identity(self.counter.value) + 1
        warm_up = counter <= self.warmup_steps
        solve_now = ops.logical_and(ops.logical_not(warm_up), counter % self.period == 0)

        def solve():
            refined = tf.numpy_function(self.refine, [pseudo_orig], dtype, stateful=False, name="darp_solve")
            return tf.ensure_shape(refined, pseudo_orig.shape)

        pseudo_refined = tf.cond(solve_now, solve, lambda: tf.identity(self.pseudo_refined.value))
        self.pseudo_orig.assign(pseudo_orig)
        self.pseudo_refined.assign(pseudo_refined)
        self.counter.assign(counter)
        refined = ops.cast(ops.take(pseudo_refined, ops.cast(indices, "int64"), axis=0), probs.dtype)
        return ops.where(warm_up, probs, refined)

    def get_config(self):
        config = super().get_config()
        config.update(num_samples=self.num_samples, target_counts=self.target_counts,
                      warmup_steps=self.warmup_steps, period=self.period, alpha=self.alpha,
                      iterations=self.iterations)
        return config
