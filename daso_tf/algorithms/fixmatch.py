"""FixMatch (Sohn et al., 2020) on the shared base, as the DASO reference runs it.

loss = loss_x + lambda_u * loss_u, where
  loss_x = CE(logits_l, y)                          (optionally + tau*log prior: train-time LA)
  p      = softmax(logits_w)                        (no temperature, no gradient)
  loss_u = sum_i mask_i * CE(logits_s_i, argmax p_i) / B_u,  mask = max p >= threshold
"""

import keras
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.losses import supervised_loss, unlabeled_loss


@keras.saving.register_keras_serializable(package="daso_tf")
class FixMatch(SemiSupervisedModel):
    """FixMatch with an optional train-time logit adjustment ("FixMatch + LA").

    Args (beyond ``SemiSupervisedModel``'s):
        threshold: confidence threshold tau of the mask (0.95).
        lambda_u: weight of the unlabeled loss (1.0).
        logit_adjust: add ``logit_adjust_tau * log(prior_labeled)`` to the labeled logits
            (needs ``labeled_class_counts``).
        logit_adjust_tau: the LA strength (1.0).
    """

    def __init__(self, backbone, num_classes, threshold=0.95, lambda_u=1.0, logit_adjust=False,
                 logit_adjust_tau=1.0, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {threshold}.")
        self.threshold = float(threshold)
        self.lambda_u = float(lambda_u)
        self.logit_adjust = bool(logit_adjust)
        self.logit_adjust_tau = float(logit_adjust_tau)
        if self.logit_adjust and self.labeled_class_counts is None:
            raise ValueError("logit_adjust=True needs labeled_class_counts (the labeled prior).")

    def compute_losses(self, batch, parts, step):
        dtype = self.loss_dtype()
        loss_x = self.labeled_loss(parts["logits_l"], batch["y_l"])
        linear_probs = ops.softmax(ops.stop_gradient(ops.cast(parts["logits_w"], dtype)), axis=-1)
        pseudo_label_probs, extra_outputs = self.refine_pseudo_labels(linear_probs, parts, step)
        loss_u, mask = unlabeled_loss(parts["logits_s"], pseudo_label_probs, self.threshold)
        losses = {"loss_x": ops.cast(loss_x, dtype), "loss_u": ops.cast(loss_u, dtype)}
        losses.update(self.extra_losses(parts, extra_outputs, step))
        losses["loss"] = self.total_loss(losses)
        outputs = {
            "linear_pseudo_labels": ops.argmax(linear_probs, axis=-1),
            "pseudo_labels": ops.argmax(pseudo_label_probs, axis=-1),
            "confidence": ops.max(pseudo_label_probs, axis=-1),
            "mask": mask,
        }
        outputs.update(extra_outputs)
        return losses, outputs

    def labeled_loss(self, logits_l, labels):
        prior = self.labeled_prior() if self.logit_adjust else None
        return supervised_loss(logits_l, labels, class_prior=prior, tau=self.logit_adjust_tau)

    def refine_pseudo_labels(self, linear_probs, parts, step):
        """Hook: the final pseudo-label distribution p' (FixMatch: p itself)."""
        return linear_probs, {}

    def extra_losses(self, parts, extra_outputs, step):
        """Hook: additional weighted loss terms, e.g. DASO's loss_align."""
        return {}

    def total_loss(self, losses):
        return losses["loss_x"] + ops.convert_to_tensor(self.lambda_u, losses["loss_u"].dtype) * losses["loss_u"]

    def get_config(self):
        config = super().get_config()
        config.update({
            "threshold": self.threshold,
            "lambda_u": self.lambda_u,
            "logit_adjust": self.logit_adjust,
            "logit_adjust_tau": self.logit_adjust_tau,
        })
        return config
