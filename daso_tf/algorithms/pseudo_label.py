"""PseudoLabel (Lee, 2013) as the DASO reference runs it (``lib/algorithm/pseudo_label.py``,
``configs/*/pseudolabel.yaml``).

Per step t (0-based), with ONE weak view u_w of the unlabeled images:
  z        = f([x_l; u_w])                    (one pass, BatchNorm in training mode)
  loss_x   = CE(z_l, y)
  p        = softmax(z_u)                     (no gradient)
  mask     = max p >= threshold               (0.95)
  loss_u   = ramp(t) * lambda_u * sum_i mask_i * CE(z_u_i, argmax p_i) / B_u
  ramp(t)  = min(t / (rampup_ratio * total_steps), 1)    (linear over 0.4 * 250k steps)
  loss     = loss_x + loss_u
The same logits of the same view are the target (without gradient) and the prediction.
No strong augmentation. The reference config's ramp-up is linear (its defaults.py says "exp";
pseudolabel.yaml overrides it) and its unlabeled ratio is 1 (run.py: ``data.unlabeled_ratio=1``).

Unlabeled views: ("weak",); a batch in the standard (u_w, u_s) layout uses u_w only.
"""

import keras
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.algorithms.ramps import linear_rampup
from daso_tf.losses import supervised_loss, unlabeled_loss


@keras.saving.register_keras_serializable(package="daso_tf")
class PseudoLabel(SemiSupervisedModel):
    """Pseudo-labelling with confident hard labels of the model's own weak-view predictions.

    Args (beyond ``SemiSupervisedModel``'s):
        threshold: confidence threshold of the mask (0.95).
        lambda_u: weight of the unlabeled loss (1.0).
        rampup_ratio: the unlabeled loss ramps up linearly over ``rampup_ratio *
            total_steps`` steps (0.4; 0 = no ramp-up).
        total_steps: the run's length (the reference's 250,000; run.py passes
            trainer.train_steps).
    """

    unlabeled_views = ("weak",)

    def __init__(self, backbone, num_classes, threshold=0.95, lambda_u=1.0, rampup_ratio=0.4,
                 total_steps=250_000, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {threshold}.")
        if float(rampup_ratio) < 0 or int(total_steps) < 1:
            raise ValueError(f"rampup_ratio must be >= 0 and total_steps >= 1; got {rampup_ratio}, {total_steps}.")
        self.threshold = float(threshold)
        self.lambda_u = float(lambda_u)
        self.rampup_ratio = float(rampup_ratio)
        self.total_steps = int(total_steps)

    def select_unlabeled_views(self, views):
        return list(views[:1])  # the weak view (the standard layout's u_s is not used)

    def forward_and_compute_losses(self, batch, step):
        dtype = self.loss_dtype()
        (_, _), (logits_l, logits_u) = self.online_forward([batch["x_l"], batch["u_w"]])
        loss_x = ops.cast(supervised_loss(logits_l, batch["y_l"]), dtype)
        probs = ops.softmax(ops.stop_gradient(ops.cast(logits_u, dtype)), axis=-1)
        loss_u, mask = unlabeled_loss(logits_u, probs, self.threshold)
        ramp = linear_rampup(step, self.rampup_ratio * self.total_steps, dtype)
        loss_u = ramp * ops.convert_to_tensor(self.lambda_u, dtype) * ops.cast(loss_u, dtype)
        outputs = {"pseudo_labels": ops.argmax(probs, axis=-1), "confidence": ops.max(probs, axis=-1),
                   "mask": mask}
        return {"loss_x": loss_x, "loss_u": loss_u, "loss": loss_x + loss_u}, outputs

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold, "lambda_u": self.lambda_u,
                       "rampup_ratio": self.rampup_ratio, "total_steps": self.total_steps})
        return config
