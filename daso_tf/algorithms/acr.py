"""ACR, the adaptive consistency regularizer (Wei & Gan, "Towards Realistic Long-Tailed
Semi-Supervised Learning: Consistency Is All You Need", CVPR 2023), after the authors'
``train.py`` (Gank0078/ACR).

Two linear heads on the shared features: ``classifier`` (fc, head 1, "standard") and
``balanced_classifier`` (fc1, head 2, "balanced"). With pi_l the labeled class prior and
A(tau) = log(pi_l ** tau + 1e-12), per step (unlabeled views u_w, u_s1, u_s2; z = fc,
b = fc1; everything from weak logits without gradient):
  loss_x   = CE(z_l, y)
  loss_xb  = CE(b_l + A(tau2), y)                                  (logit-adjusted head 2)
  q1 = softmax(z_w - A(tau1)), q12 = softmax(z_w - A(tau12)), qb = softmax(b_w), qt = softmax(z_w)
  mask1    = [max q1 >= thr] OR [max qt >= thr];  mask2 = [max qb >= thr] OR [max q12 >= thr]
  loss_u   = sum over both strong views and i of mask1_i CE(z_s_i, argmax q1_i) / (2 B_u)
  loss_ub  = sum over both strong views and i of mask2_i CE(b_s_i, argmax q12_i) / (2 B_u)
  loss     = loss_x + loss_u + loss_xb + loss_ub
tau12 and tau2 are fixed; tau1 adapts to the unlabeled class distribution:
- estimate (every step t >= estimation_start_step): v[c] = the mask 1[max qb_i >= thr] of
  the LAST sample i of the (global) batch whose head-2 pseudo-label argmax qb_i is c, 0 where
  that sample is a labeled image also in the unlabeled set (ACR's split) or no sample is
  predicted as c. This is what the reference's ``now_mask[targets_u_b] += mask_l * mask_b``
  computes (an indexed assignment with repeated indices: one write per class survives, not a
  count); "last write wins" is implemented deterministically. If sum v > 0:
  u_hat <- rho u_hat + (1 - rho) v / sum v, and the distances
  d_x = KL(u_hat || pi_x) / 2 + KL(pi_x || u_hat) / 2 to the three anchors pi_con = pi_l,
  pi_uni = 1/K, pi_rev = reversed pi_l are added to D.
- at every multiple t of adaptation_period with t >= estimation_start_step (the reference's
  epochs of 500 steps, from epoch 6 = step 3000): D_mean = D / adaptation_period,
  s = e^D_mean_con / (e^D_mean_con + e^D_mean_uni + e^D_mean_rev), tau1 <- tau1_max * s (kept
  if NaN); then D <- 0. So tau1 = tau1_max until step 3000, tau1_max / 3 from 3000 (D was
  0), adaptive after: u_hat near pi_l gives tau1 -> 0, near uniform ~ 1, reversed ~ 2.
Evaluation, prediction and export use head 2 (fc1) of the EMA network, as the reference
reports head 2 ("Top1_b"); head 1 is not evaluated.

Two protocols (README "ACR"): the learner's defaults run it under DASO's protocol (constant
LR 0.03 with coupled L2 on every variable, DASO's EMA with warm-up on weights and BatchNorm
statistics; the unlabeled batch is mu * B images, each with ACR's three views); the
``*_acr`` experiments set ACR's own (``lr_schedule="cosine"``, ``decay_bias_and_norm=False``,
``ema_warmup=False``, ``ema_copy_batch_norm=True``, mu = 1, its data split and BatchNorm
momentum).
"""

import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel, all_gather
from daso_tf.algorithms.lr_schedules import CosineSchedule
from daso_tf.config import LR_SCHEDULES
from daso_tf.data.long_tailed_data import LABELED_IN_UNLABELED
from daso_tf.losses import masked_cross_entropy, supervised_loss
from daso_tf.optimizers import reference_sgd

BALANCED_HEAD = "balanced_classifier"
ADJUSTMENT_EPSILON = 1e-12
# ACR's optimiser leaves parameters whose PyTorch name holds "bias" or "bn" undecayed: here
# the Keras variable names of biases and of BatchNorm scales and offsets.
UNDECAYED_VARIABLE_NAMES = ("bias", "gamma", "beta")


def logit_adjustment(prior, tau):
    """A(tau) = log(prior ** tau + 1e-12), `[K]`."""
    prior = ops.convert_to_tensor(prior)
    return ops.log(ops.power(prior, ops.cast(tau, prior.dtype)) + ADJUSTMENT_EPSILON)


def kl_divergence(p, q):
    """KL(p || q) = sum_k p_k (log p_k - log q_k), with 0 log 0 = 0."""
    p, q = ops.convert_to_tensor(p), ops.convert_to_tensor(q)
    terms = p * (ops.log(ops.where(p > 0, p, 1.0)) - ops.log(q))
    return ops.sum(ops.where(p > 0, terms, 0.0), axis=-1)


def symmetric_kl(p, q):
    """KL(p || q) / 2 + KL(q || p) / 2."""
    return 0.5 * kl_divergence(p, q) + 0.5 * kl_divergence(q, p)


def adaptive_tau1(distance_sums, period, tau_max, tau_min=0.0):
    """tau1 from the summed distances D = (d_con, d_uni, d_rev) of one adaptation period:
    ``tau_min + (tau_max - tau_min) * e^D_con / sum e^D`` with D divided by ``period`` (NaN
    when the exponentials overflow, as in the reference; callers keep tau1 then)."""
    exponentials = ops.exp(ops.convert_to_tensor(distance_sums) / float(period))
    return tau_min + (tau_max - tau_min) * exponentials[0] / ops.sum(exponentials)


def last_write_scatter(indices, values, num_classes):
    """``v[c] = values[i]`` for the LAST i with ``indices[i] == c``, 0 where there is none
    (a deterministic "last write wins" ``v[indices] = values``), `[K]`."""
    values = ops.convert_to_tensor(values)
    one_hot = ops.one_hot(ops.cast(indices, "int32"), num_classes, dtype="int32")
    positions = (ops.arange(1, ops.shape(one_hot)[0] + 1, dtype="int32")[:, None]) * one_hot
    last = ops.argmax(positions, axis=0)
    present = ops.max(positions, axis=0) > 0
    return ops.where(present, ops.take(values, last), ops.zeros((), values.dtype))


def distribution_estimate(balanced_labels, balanced_confident, not_labeled, num_classes):
    """ACR's per-step class-distribution sample v `[K]` (unnormalised; see the module
    docstring): the confident-and-not-labeled flag of the last sample predicted as each class."""
    flags = ops.cast(balanced_confident, "float32") * ops.cast(not_labeled, "float32")
    return last_write_scatter(balanced_labels, flags, num_classes)


@keras.saving.register_keras_serializable(package="daso_tf")
class ACR(SemiSupervisedModel):
    """ACR: dual heads, logit-adjusted losses and an adaptive tau1 (needs ``labeled_class_counts``).

    Args (beyond ``SemiSupervisedModel``'s; ema_decay 0.999):
        threshold: confidence threshold of every mask (0.95).
        tau1: tau1's initial and largest value (2; its smallest is 0).
        tau12: the fixed adjustment of head 2's targets (2).
        tau2: the fixed adjustment of head 2's labeled loss (2).
        distribution_momentum: rho of the unlabeled class-distribution EMA (0.99, the
            README commands' ``--ema-u``; the argparse default is 0.9).
        adaptation_period: steps between tau1 updates (500, the reference's ``eval_step``).
        estimation_start_step: first step of the estimate and of tau1 updates (3000: the
            reference estimates in epochs > ``est_epoch`` = 5 of 500 steps).
        ema_warmup: EMA decay ``min(1 - 1/(t+1), ema_decay)`` (True, DASO's protocol) or the
            constant ``ema_decay`` (False, ACR's).
        ema_copy_batch_norm: the EMA network's BatchNorm moving statistics are copied from the
            online network (True, ACR's ModelEMA) instead of averaged (False, DASO's).

    Unlabeled views: (weak, strong, strong); the standard (weak, strong) layout uses u_s as
    both strong views. Optional unlabeled ground truth: -2 marks labeled images in the
    unlabeled set (ACR's split), which the estimate skips.

    State (checkpointed): ``tau1_current``, ``unlabeled_distribution`` (u_hat, [K]),
    ``distance_sums`` (D, [3]).
    """

    unlabeled_views = ("weak", "strong", "strong")

    def __init__(self, backbone, num_classes, threshold=0.95, tau1=2.0, tau12=2.0, tau2=2.0,
                 distribution_momentum=0.99, adaptation_period=500, estimation_start_step=3000,
                 ema_warmup=True, ema_copy_batch_norm=False, **kwargs):
        kwargs.update(auxiliary_heads=[(BALANCED_HEAD, int(num_classes))], evaluation_head=BALANCED_HEAD)
        super().__init__(backbone, num_classes, **kwargs)
        if self.labeled_class_counts is None:
            raise ValueError("ACR needs labeled_class_counts (its logit adjustments use the labeled prior).")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {threshold}.")
        for name, value in (("tau1", tau1), ("tau12", tau12), ("tau2", tau2)):
            if float(value) < 0:
                raise ValueError(f"{name} must be >= 0; got {value}.")
        if not 0.0 <= float(distribution_momentum) < 1.0:
            raise ValueError(f"distribution_momentum must be in [0, 1); got {distribution_momentum}.")
        if int(adaptation_period) < 1 or int(estimation_start_step) < 0:
            raise ValueError(f"adaptation_period must be >= 1 and estimation_start_step >= 0; got "
                             f"{adaptation_period}, {estimation_start_step}.")
        self.threshold = float(threshold)
        self.tau1, self.tau12, self.tau2 = float(tau1), float(tau12), float(tau2)
        self.distribution_momentum = float(distribution_momentum)
        self.adaptation_period = int(adaptation_period)
        self.estimation_start_step = int(estimation_start_step)
        self.ema_warmup = bool(ema_warmup)
        self.ema_copy_batch_norm = bool(ema_copy_batch_norm)

    @classmethod
    def default_optimizer(cls, learning_rate=None, momentum=None, nesterov=None, weight_decay=None,
                          lr_schedule=None, decay_bias_and_norm=None, total_steps=None):
        """The reference SGD (Nesterov 0.9, LR 0.03, coupled L2 5e-4), and optionally ACR's
        changes to it: ``lr_schedule="cosine"`` (``CosineSchedule``, lr_t = lr cos(7 pi t /
        (16 total_steps)); None / "constant": the constant LR) and ``decay_bias_and_norm=False``
        (no L2 on biases and BatchNorm scales/offsets; None / True: L2 on every variable)."""
        if lr_schedule not in (None,) + LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got {lr_schedule!r}.")
        overrides = {name: value for name, value in dict(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, l2=weight_decay).items()
            if value is not None}
        if lr_schedule == "cosine":
            if total_steps is None:
                raise ValueError("lr_schedule='cosine' needs total_steps (the run's length).")
            base = overrides.get("learning_rate",
                                 inspect.signature(reference_sgd).parameters["learning_rate"].default)
            overrides["learning_rate"] = CosineSchedule(base, total_steps)
        if decay_bias_and_norm is False:
            overrides["l2_exclude"] = UNDECAYED_VARIABLE_NAMES
        return reference_sgd(**overrides)

    def select_unlabeled_views(self, views):
        return self.select_weak_and_two_strong_views(views)

    def build_state(self, feature_dim):
        state = dict(trainable=False, dtype=self.loss_dtype(), aggregation="only_first_replica")
        self.tau1_current = self.add_weight(name="tau1_current", shape=(),
                                            initializer=keras.initializers.Constant(self.tau1), **state)
        self.unlabeled_distribution = self.add_weight(
            name="unlabeled_distribution", shape=(self.num_classes,),
            initializer=keras.initializers.Constant(1.0 / self.num_classes), **state)
        self.distance_sums = self.add_weight(name="distance_sums", shape=(3,), initializer="zeros", **state)

    def anchor_distributions(self):
        """(pi_con, pi_uni, pi_rev) `[3, K]`: the labeled prior, uniform, the reversed prior."""
        prior = np.asarray(self.labeled_class_counts, dtype="float64")
        prior = prior / prior.sum()
        anchors = np.stack([prior, np.full_like(prior, 1.0 / prior.size), prior[::-1]])
        return ops.convert_to_tensor(anchors, dtype=self.loss_dtype())

    # ------------------------------------------------------------------ tau1
    def before_online_forward(self, batch, step):
        """At the start of every adaptation period from ``estimation_start_step`` on: tau1
        from the distances summed over the last period; D restarts at every period."""
        boundary = ops.equal(step % self.adaptation_period, 0)
        adapt = ops.logical_and(boundary, step >= self.estimation_start_step)
        current = ops.convert_to_tensor(self.tau1_current)
        distances = ops.convert_to_tensor(self.distance_sums)
        proposed = adaptive_tau1(distances, self.adaptation_period, self.tau1)
        keep = ops.logical_or(ops.logical_not(adapt), ops.isnan(proposed))
        # Tied to the batch: a call whose input ran out must not update the state.
        with tf.control_dependencies([batch["y_l"]]):
            self.tau1_current.assign(ops.where(keep, current, proposed))
            self.distance_sums.assign(ops.where(boundary, ops.zeros_like(distances), distances))

    # ------------------------------------------------------------------ losses
    def forward_and_compute_losses(self, batch, step):
        dtype = self.loss_dtype()
        y_l = batch["y_l"]
        views = [batch["x_l"], *batch["u_views"]]
        if len({view.dtype for view in views}) > 1:
            views = [ops.cast(view, "float32") for view in views]
        num_labeled, num_unlabeled = ops.shape(views[0])[0], ops.shape(views[1])[0]
        features = self.online_network.features(ops.concatenate(views, axis=0), training=True)
        logits = ops.cast(self.online_network.head("classifier")(features), dtype)
        balanced = ops.cast(self.online_network.head(BALANCED_HEAD)(features), dtype)

        def split(all_logits):
            unlabeled = all_logits[num_labeled:]
            return (all_logits[:num_labeled], unlabeled[:num_unlabeled],
                    unlabeled[num_unlabeled:2 * num_unlabeled], unlabeled[2 * num_unlabeled:])

        z_l, z_w, z_s1, z_s2 = split(logits)
        b_l, b_w, b_s1, b_s2 = split(balanced)
        prior = self.labeled_prior()
        losses = {
            "loss_x": ops.cast(supervised_loss(z_l, y_l), dtype),
            "loss_xb": ops.cast(supervised_loss(b_l + logit_adjustment(prior, self.tau2), y_l), dtype),
        }
        targets = self.pseudo_labels(ops.stop_gradient(z_w), ops.stop_gradient(b_w), prior)
        losses["loss_u"] = 0.5 * (masked_cross_entropy(z_s1, targets["pseudo_labels"], targets["mask"])
                                  + masked_cross_entropy(z_s2, targets["pseudo_labels"], targets["mask"]))
        losses["loss_ub"] = 0.5 * (
            masked_cross_entropy(b_s1, targets["balanced_targets"], targets["balanced_mask"])
            + masked_cross_entropy(b_s2, targets["balanced_targets"], targets["balanced_mask"]))
        losses = {key: ops.cast(value, dtype) for key, value in losses.items()}
        losses["loss"] = losses["loss_x"] + losses["loss_u"] + losses["loss_xb"] + losses["loss_ub"]
        losses["tau1"] = ops.convert_to_tensor(self.tau1_current)
        outputs = dict(targets, mask=ops.cast(targets["mask"], dtype),
                       balanced_mask=ops.cast(targets["balanced_mask"], dtype))
        return losses, outputs

    def pseudo_labels(self, weak_logits, weak_balanced_logits, prior):
        """Both heads' targets and masks from the weak view's logits (no gradient)."""
        threshold = ops.convert_to_tensor(self.threshold, weak_logits.dtype)
        q1 = ops.softmax(weak_logits - logit_adjustment(prior, ops.convert_to_tensor(self.tau1_current)), axis=-1)
        q12 = ops.softmax(weak_logits - logit_adjustment(prior, self.tau12), axis=-1)
        qb = ops.softmax(weak_balanced_logits, axis=-1)
        qt = ops.softmax(weak_logits, axis=-1)

        def confident(probs):
            return ops.max(probs, axis=-1) >= threshold

        return {
            "linear_pseudo_labels": ops.argmax(qt, axis=-1),
            "pseudo_labels": ops.argmax(q1, axis=-1),
            "mask": ops.logical_or(confident(q1), confident(qt)),
            "balanced_targets": ops.argmax(q12, axis=-1),
            "balanced_mask": ops.logical_or(confident(qb), confident(q12)),
            "balanced_pseudo_labels": ops.argmax(qb, axis=-1),
            "balanced_confident": ops.cast(confident(qb), weak_logits.dtype),
        }

    # ------------------------------------------------------------------ estimate of the unlabeled distribution
    def after_optimizer_step(self, batch, outputs, step):
        labels = all_gather(outputs["balanced_pseudo_labels"])
        confident = all_gather(outputs["balanced_confident"])
        if batch["u_true"] is None:
            not_labeled = ops.ones_like(confident)
        else:
            not_labeled = all_gather(ops.cast(ops.not_equal(batch["u_true"], LABELED_IN_UNLABELED), confident.dtype))
        sample = ops.cast(distribution_estimate(labels, confident, not_labeled, self.num_classes),
                          self.loss_dtype())
        total = ops.sum(sample)
        update = ops.logical_and(step >= self.estimation_start_step, total > 0)
        rho = ops.convert_to_tensor(self.distribution_momentum, sample.dtype)
        current = ops.convert_to_tensor(self.unlabeled_distribution)
        estimate = rho * current + (1.0 - rho) * sample / ops.maximum(total, 1e-12)
        distances = ops.stack([symmetric_kl(estimate, anchor) for anchor in ops.unstack(self.anchor_distributions())])
        self.unlabeled_distribution.assign(ops.where(update, estimate, current))
        self.distance_sums.assign(ops.where(update, self.distance_sums + distances, self.distance_sums))

    # ------------------------------------------------------------------ EMA
    def update_ema(self, step):
        """DASO's EMA, or ACR's (constant decay; BatchNorm statistics copied), per the flags."""
        decay = ops.convert_to_tensor(self.ema_decay, "float64")
        if self.ema_warmup:
            decay = ops.minimum(1.0 - 1.0 / (ops.cast(step, "float64") + 1.0), decay)
        self.average_into_ema(decay, copy_batch_norm_statistics=self.ema_copy_batch_norm)

    def get_config(self):
        config = super().get_config()
        config.update({
            "threshold": self.threshold, "tau1": self.tau1, "tau12": self.tau12, "tau2": self.tau2,
            "distribution_momentum": self.distribution_momentum, "adaptation_period": self.adaptation_period,
            "estimation_start_step": self.estimation_start_step, "ema_warmup": self.ema_warmup,
            "ema_copy_batch_norm": self.ema_copy_batch_norm,
        })
        return config
