"""FixMatch + DASO (Oh, Kim, Kweon, CVPR 2022), spec/DASO.md section 1.

Per step t (0-based):
  1. the EMA network (BatchNorm in training mode) encodes x_l; the features enter the
     per-class queue; prototypes c = per-class queue means;
  2-4. FixMatch's forward pass and linear pseudo-label p = softmax(logits_w);
  5. after the warm-up (t >= warmup_steps):
       q      = softmax(cos(z_w, c) / T_proto)                  (current batch, no gradient)
       v      = distribution_weights(m, T_dist)                 (m: last closed histogram)
       p'     = (1 - v[argmax p]) p + v[argmax p] q
       loss_align = mean_i -sum_k q_ik log softmax(cos(z_s, c) / T_proto)_k
     before it: p' = p, loss_align = 0;
  6-7. mask = max p' >= threshold, loss_u on argmax p' (FixMatch);
  8. loss = loss_x + lambda_u loss_u + lambda_align loss_align;
  11. every final pseudo-label argmax p' (unmasked) is counted in the histogram.
The warm-up switch is a graph-level select on the step variable: no retracing.

"+ LA" is ``logit_adjust=True``; "+ ABC" is ``abc=True`` (spec section 8): an auxiliary
balanced head (daso_tf.algorithms.abc_head) whose soft target is blended with the same q and
v (looked up at the ABC argmax) after the warm-up; evaluation then uses the ABC head. The
histogram keeps counting the linear classifier's final pseudo-labels, as the reference does.
"""

import keras
from keras import ops

from daso_tf.algorithms.abc_head import ABC_HEAD, AuxiliaryBalancedClassifierMixin
from daso_tf.algorithms.base import all_gather
from daso_tf.algorithms.fixmatch import FixMatch
from daso_tf.layers import PrototypeQueue, PseudoLabelHistogram
from daso_tf.losses import semantic_alignment_loss
from daso_tf.pseudo_labels import blend_pseudo_labels, distribution_weights, semantic_probs


@keras.saving.register_keras_serializable(package="daso_tf")
class DASO(AuxiliaryBalancedClassifierMixin, FixMatch):
    """FixMatch with distribution-aware semantic pseudo-labels and semantic alignment.

    Args (beyond ``FixMatch``'s):
        warmup_steps: P, steps before DASO's blending and alignment start (5000).
        queue_size: L, features kept per class (256).
        histogram_period: steps per pseudo-label histogram window (100).
        dist_temperature: T_dist (1.5 when gamma_l == gamma_u, else 0.3).
        proto_temperature: T_proto (0.05).
        lambda_align: weight of the semantic alignment loss (1.0).
        total_steps: optional length of the run. The reference does not close the
            histogram window at its very last step; set this to reproduce that exactly
            (only the final histogram differs; training is unaffected).
        abc: add ABC, the auxiliary balanced classifier ("FixMatch + ABC w/ DASO"; needs
            ``labeled_class_counts``).
        seed: seed of the SeedGenerator of ABC's Bernoulli masks (only with ``abc=True``).
    """

    def __init__(self, backbone, num_classes, warmup_steps=5000, queue_size=256,
                 histogram_period=100, dist_temperature=1.5, proto_temperature=0.05,
                 lambda_align=1.0, total_steps=None, abc=False, seed=None, **kwargs):
        self_abc = bool(abc)
        if not self_abc and seed is not None:
            raise ValueError("DASO: `seed` seeds ABC's Bernoulli masks; it needs abc=True.")
        if self_abc:
            kwargs.update(auxiliary_heads=self.abc_heads(num_classes), evaluation_head=ABC_HEAD)
        super().__init__(backbone, num_classes, **kwargs)
        self.abc = self_abc
        if self.abc:
            self.init_abc(seed)
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
        self.lambda_align = float(lambda_align)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.histogram = PseudoLabelHistogram(self.num_classes, self.histogram_period, name="histogram")

    def build_state(self, feature_dim):
        self.queue = PrototypeQueue(self.num_classes, feature_dim, self.queue_size, name="queue")

    def daso_active(self, step):
        return step >= self.warmup_steps

    # ---------------------------------------------------------------- spec step 1
    def before_online_forward(self, batch, step):
        features = self.ema_network.features(batch["x_l"], training=True)
        features = ops.stop_gradient(ops.cast(features, self.queue.variable_dtype))
        if features.shape[-1] is not None and features.shape[-1] != self.queue.feature_dim:
            raise ValueError(
                f"The backbone returns {features.shape[-1]}-d features but the prototype queue "
                f"holds {self.queue.feature_dim}-d ones.")
        self.queue.enqueue(all_gather(features), all_gather(batch["y_l"]))

    # ---------------------------------------------------------------- spec step 5
    def refine_pseudo_labels(self, linear_probs, parts, step):
        dtype = linear_probs.dtype
        prototypes = ops.cast(self.queue.prototypes, dtype)
        weak_features = ops.stop_gradient(ops.cast(parts["features_w"], dtype))
        semantic = ops.stop_gradient(semantic_probs(weak_features, prototypes, self.proto_temperature))
        semantic = ops.cast(semantic, dtype)
        class_weights = distribution_weights(self.histogram.counts, self.dist_temperature, dtype=dtype)
        blended = ops.cast(blend_pseudo_labels(linear_probs, semantic, class_weights), dtype)
        active = self.daso_active(step)
        pseudo_label_probs = ops.where(active, blended, linear_probs)
        semantic_labels = ops.where(active, ops.argmax(semantic, axis=-1), -ops.ones_like(ops.argmax(semantic, axis=-1)))
        return pseudo_label_probs, {"semantic_probs": semantic, "semantic_pseudo_labels": semantic_labels,
                                    "prototypes": prototypes}

    def compute_losses(self, batch, parts, step):
        if self.abc:
            parts = dict(parts, labels=batch["y_l"])
        return super().compute_losses(batch, parts, step)

    def extra_losses(self, parts, extra_outputs, step):
        dtype = extra_outputs["semantic_probs"].dtype
        loss_align = semantic_alignment_loss(
            extra_outputs["semantic_probs"], ops.cast(parts["features_s"], dtype),
            extra_outputs["prototypes"], self.proto_temperature)
        loss_align = ops.where(self.daso_active(step), ops.cast(loss_align, dtype), ops.zeros((), dtype))
        losses = {"loss_align": loss_align}
        if self.abc:
            # ABC's target is blended with the same q and v (spec section 8), after warm-up.
            class_weights = distribution_weights(self.histogram.counts, self.dist_temperature, dtype=dtype)
            losses["loss_abc"], _ = self.abc_extra_losses(
                parts, step, semantic_probs=extra_outputs["semantic_probs"],
                class_weights=class_weights, active=self.daso_active(step))
        return losses

    def total_loss(self, losses):
        lambda_align = ops.convert_to_tensor(self.lambda_align, losses["loss_align"].dtype)
        total = super().total_loss(losses) + lambda_align * losses["loss_align"]
        if self.abc:
            total = total + losses["loss_abc"]
        return total

    # ---------------------------------------------------------------- spec step 11
    def after_optimizer_step(self, batch, outputs, step):
        allow_close = True if self.total_steps is None else (step + 1 < self.total_steps)
        self.histogram.update(all_gather(outputs["pseudo_labels"]), allow_close=allow_close)

    def get_config(self):
        config = super().get_config()
        config.update({
            "warmup_steps": self.warmup_steps,
            "queue_size": self.queue_size,
            "histogram_period": self.histogram_period,
            "dist_temperature": self.dist_temperature,
            "proto_temperature": self.proto_temperature,
            "lambda_align": self.lambda_align,
            "total_steps": self.total_steps,
        })
        if self.abc:  # absent when off, so configs of plain DASO models are unchanged
            config.update({"abc": True, "seed": self.seed})
        return config
