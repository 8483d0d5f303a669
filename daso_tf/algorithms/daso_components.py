"""DASO's pseudo-label machinery for learners other than FixMatch (docs/algorithm.md section 5).

MeanTeacher / MixMatch / ReMixMatch + DASO share FixMatch + DASO's state and math: the
class-wise prototype queue fed with EMA features of the labeled batch, the pseudo-label
histogram, q = softmax(cos(z, c) / T_proto), v = distribution_weights(m, T_dist) and the
blend p' = (1 - v[argmax p]) p + v[argmax p] q after ``warmup_steps``. Each learner decides
WHERE it blends (its own p) and whether it uses L_align (ReMixMatch only).
"""

from keras import ops

from daso_tf.algorithms.base import all_gather
from daso_tf.layers import PrototypeQueue, PseudoLabelHistogram
from daso_tf.losses import semantic_alignment_loss
from daso_tf.pseudo_labels import blend_pseudo_labels, distribution_weights, semantic_probs


class DASOComponentsMixin:
    """Queue, histogram and blending for a learner with ``daso=True``.

    Call ``init_daso(...)`` in ``__init__`` and ``build_daso_state(feature_dim)`` in
    ``build_state``; ``daso_config()`` returns the get_config entries.
    """

    def init_daso(self, daso, warmup_steps, queue_size, histogram_period, dist_temperature,
                  proto_temperature, total_steps):
        self.daso = bool(daso)
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}.")
        for name, value in (("dist_temperature", dist_temperature), ("proto_temperature", proto_temperature)):
            if float(value) <= 0:
                raise ValueError(f"{name} must be > 0; got {value}.")
        self.warmup_steps = int(warmup_steps)
        self.queue_size = int(queue_size)
        self.histogram_period = int(histogram_period)
        self.dist_temperature = float(dist_temperature)
        self.proto_temperature = float(proto_temperature)
        self.total_steps = None if total_steps is None else int(total_steps)
        if self.daso:
            self.histogram = PseudoLabelHistogram(self.num_classes, self.histogram_period, name="histogram")

    def build_daso_state(self, feature_dim):
        if self.daso:
            self.queue = PrototypeQueue(self.num_classes, feature_dim, self.queue_size, name="queue")

    def daso_active(self, step):
        return step >= self.warmup_steps

    def daso_enqueue(self, ema_labeled_features, labels):
        features = ops.stop_gradient(ops.cast(ema_labeled_features, self.queue.variable_dtype))
        self.queue.enqueue(all_gather(features), all_gather(labels))

    def daso_semantic_probs(self, features, dtype):
        prototypes = ops.cast(self.queue.prototypes, dtype)
        features = ops.stop_gradient(ops.cast(features, dtype))
        return ops.cast(ops.stop_gradient(semantic_probs(features, prototypes, self.proto_temperature)), dtype)

    def daso_blend(self, probs, semantic, step):
        """p' after the warm-up (v looked up at argmax ``probs``), ``probs`` before it."""
        dtype = probs.dtype
        class_weights = distribution_weights(self.histogram.counts, self.dist_temperature, dtype=dtype)
        blended = ops.cast(blend_pseudo_labels(probs, semantic, class_weights), dtype)
        return ops.where(self.daso_active(step), blended, probs)

    def daso_alignment_loss(self, semantic, strong_features, step):
        dtype = semantic.dtype
        loss = semantic_alignment_loss(semantic, ops.cast(strong_features, dtype),
                                       ops.cast(self.queue.prototypes, dtype), self.proto_temperature)
        return ops.where(self.daso_active(step), ops.cast(loss, dtype), ops.zeros((), dtype))

    def daso_update_histogram(self, pseudo_labels, step):
        allow_close = True if self.total_steps is None else (step + 1 < self.total_steps)
        self.histogram.update(all_gather(pseudo_labels), allow_close=allow_close)

    def daso_config(self):
        return {"daso": self.daso, "warmup_steps": self.warmup_steps, "queue_size": self.queue_size,
                "histogram_period": self.histogram_period, "dist_temperature": self.dist_temperature,
                "proto_temperature": self.proto_temperature, "total_steps": self.total_steps}
