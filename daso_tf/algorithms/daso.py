"""FixMatch + DASO (Oh, Kim, Kweon, CVPR 2022); docs/algorithm.md section 1.

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
from daso_tf.algorithms.daso_components import DASOComponentsMixin
from daso_tf.algorithms.fixmatch import FixMatch
from daso_tf.pseudo_labels import distribution_weights


@keras.saving.register_keras_serializable(package="daso_tf")
class DASO(AuxiliaryBalancedClassifierMixin, DASOComponentsMixin, FixMatch):
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
        seed: seed of the SeedGenerator of ABC's Bernoulli masks (used only with
            ``abc=True``; None draws one).
    """

    def __init__(self, backbone, num_classes, warmup_steps=5000, queue_size=256,
                 histogram_period=100, dist_temperature=1.5, proto_temperature=0.05,
                 lambda_align=1.0, total_steps=None, abc=False, seed=None, **kwargs):
        if abc:
            kwargs.update(auxiliary_heads=self.abc_heads(num_classes), evaluation_head=ABC_HEAD)
        super().__init__(backbone, num_classes, **kwargs)
        self.abc = bool(abc)
        self.seed = seed
        if self.abc:
            self.init_abc(seed)
        self.init_daso(True, warmup_steps, queue_size, histogram_period, dist_temperature,
                       proto_temperature, total_steps)
        self.lambda_align = float(lambda_align)

    def build_state(self, feature_dim):
        self.build_daso_state(feature_dim)

    # ---------------------------------------------------------------- spec step 1
    def before_online_forward(self, batch, step):
        features = self.ema_network.features(batch["x_l"], training=True)
        if features.shape[-1] is not None and features.shape[-1] != self.queue.feature_dim:
            raise ValueError(
                f"The backbone returns {features.shape[-1]}-d features but the prototype queue "
                f"holds {self.queue.feature_dim}-d ones.")
        self.daso_enqueue(features, batch["y_l"])

    # ---------------------------------------------------------------- spec step 5
    def refine_pseudo_labels(self, linear_probs, parts, step):
        semantic = self.daso_semantic_probs(parts["features_w"], linear_probs.dtype)
        pseudo_label_probs = self.daso_blend(linear_probs, semantic, step)
        semantic_labels = ops.argmax(semantic, axis=-1)
        semantic_labels = ops.where(self.daso_active(step), semantic_labels, -ops.ones_like(semantic_labels))
        return pseudo_label_probs, {"semantic_probs": semantic, "semantic_pseudo_labels": semantic_labels}

    def compute_losses(self, batch, parts, step):
        if self.abc:
            parts = dict(parts, labels=batch["y_l"])
        return super().compute_losses(batch, parts, step)

    def extra_losses(self, parts, extra_outputs, step):
        dtype = extra_outputs["semantic_probs"].dtype
        losses = {"loss_align": self.daso_alignment_loss(extra_outputs["semantic_probs"], parts["features_s"], step)}
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
        self.daso_update_histogram(outputs["pseudo_labels"], step)

    def get_config(self):
        config = super().get_config()
        config.update(self.daso_config())
        del config["daso"]  # always on for this learner
        config.update({"lambda_align": self.lambda_align, "abc": self.abc, "seed": self.seed})
        return config
