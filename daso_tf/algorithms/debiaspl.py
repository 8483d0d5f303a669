"""DebiasPL (Wang et al., "Debiased Learning from Naturally Imbalanced Pseudo-Labels",
CVPR 2022): FixMatch with counterfactually debiased pseudo-labels and an adaptive margin.

Per step, with q_hat the running estimate of the model's marginal class distribution
(a [K] vector, uniform at the start, checkpointed):
  p~       = softmax(sg(logits_w) - tau * log q_hat_old)          (the debiased pseudo-label)
  mask     = max p~ >= threshold;  y_hat = argmax p~
  q_hat    = m * q_hat_old + (1 - m) * mean_i softmax(sg(logits_w_i))
                 (a per-class mean over the batch dimension, of the UN-debiased probabilities,
                  all B_u samples, no mask; all-gathered over replicas)
  loss_u   = sum_i mask_i * CE(logits_s_i + tau * log q_hat_new, y_hat_i) / B_u
                 (the adaptive marginal loss uses the UPDATED q_hat)
  loss     = loss_x + lambda_u * loss_u
This is the order of the authors' ``main_DebiasPL.py`` (``causal_inference`` with the old
q_hat, ``update_qhat``, then the margin with the new one). USB's port at HEAD averages
``probs.mean()`` over ALL elements, a constant 1/K, so its q_hat never leaves the uniform
vector and the method collapses to FixMatch; here the mean is over the batch axis only.
Evaluation uses raw logits of the EMA network (the margin is training-only), like every
learner here; the authors evaluate their student network with raw logits.

Defaults for CIFAR-10-LT on the DASO protocol (one weak + one strong view, mu = 2):
- ``debias_tau`` 0.4: the authors' ImageNet scripts and USB's imbalanced CIFAR/STL configs
  (``debiaspl_tau``); their argparse default 1.0 is not what any script runs;
- ``qhat_momentum`` 0.999: the authors' argparse default and 1%-ImageNet script, USB's
  ``debiaspl_ema_p``;
- ``threshold`` 0.95 and ``lambda_u`` 1: FixMatch's CIFAR values as USB's imbalanced configs
  and the DASO protocol use them (the authors' 0.7 / 10 are for ImageNet fine-tuning).
"""

import keras
from keras import ops

from daso_tf.algorithms.base import all_gather
from daso_tf.algorithms.fixmatch import FixMatch
from daso_tf.losses import unlabeled_loss


@keras.saving.register_keras_serializable(package="daso_tf")
class DebiasPL(FixMatch):
    """FixMatch + DebiasPL's counterfactual debiasing and adaptive marginal loss.

    Args (beyond ``FixMatch``'s: threshold 0.95, lambda_u 1, optional train-time LA):
        debias_tau: tau, the strength of the debiasing and of the margin (0.4).
        qhat_momentum: m, momentum of the q_hat estimate (0.999).

    State: ``qhat`` [K] (non-trainable, checkpointed), uniform at the start.
    """

    def __init__(self, backbone, num_classes, debias_tau=0.4, qhat_momentum=0.999, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if float(debias_tau) < 0:
            raise ValueError(f"debias_tau must be >= 0; got {debias_tau}.")
        if not 0.0 <= float(qhat_momentum) < 1.0:
            raise ValueError(f"qhat_momentum must be in [0, 1); got {qhat_momentum}.")
        self.debias_tau = float(debias_tau)
        self.qhat_momentum = float(qhat_momentum)

    def build_state(self, feature_dim):
        self.qhat = self.add_weight(
            name="qhat", shape=(self.num_classes,), dtype=self.loss_dtype(), trainable=False,
            initializer=keras.initializers.Constant(1.0 / self.num_classes),
            aggregation="only_first_replica")

    def compute_losses(self, batch, parts, step):
        dtype = self.loss_dtype()
        tau = ops.convert_to_tensor(self.debias_tau, dtype)
        momentum = ops.convert_to_tensor(self.qhat_momentum, dtype)
        loss_x = ops.cast(self.labeled_loss(parts["logits_l"], batch["y_l"]), dtype)
        weak_logits = ops.stop_gradient(ops.cast(parts["logits_w"], dtype))
        qhat_old = ops.convert_to_tensor(self.qhat)
        debiased_probs = ops.softmax(weak_logits - tau * ops.log(qhat_old), axis=-1)
        linear_probs = ops.softmax(weak_logits, axis=-1)
        # The global batch's per-class mean (over axis 0 only: the USB bug averages everything).
        batch_mean = ops.mean(all_gather(linear_probs), axis=0)
        qhat_new = momentum * qhat_old + (1.0 - momentum) * batch_mean
        margin = tau * ops.log(qhat_new)
        strong_logits = ops.cast(parts["logits_s"], dtype) + ops.stop_gradient(margin)
        loss_u, mask = unlabeled_loss(strong_logits, debiased_probs, self.threshold)
        losses = {"loss_x": loss_x, "loss_u": ops.cast(loss_u, dtype)}
        losses["loss"] = self.total_loss(losses)
        outputs = {
            "linear_pseudo_labels": ops.argmax(linear_probs, axis=-1),
            "pseudo_labels": ops.argmax(debiased_probs, axis=-1),
            "confidence": ops.max(debiased_probs, axis=-1),
            "mask": mask,
            "qhat": qhat_new,
        }
        return losses, outputs

    def after_optimizer_step(self, batch, outputs, step):
        # Assigned after the step, outside the gradient tape, like the other learners' state.
        self.qhat.assign(outputs["qhat"])

    def get_config(self):
        config = super().get_config()
        config.update({"debias_tau": self.debias_tau, "qhat_momentum": self.qhat_momentum})
        return config
