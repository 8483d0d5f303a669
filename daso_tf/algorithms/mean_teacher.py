"""Mean Teacher (Tarvainen & Valpola, 2017) as the DASO reference runs it (``lib/algorithm/mean_teacher.py``).

Per step t, with two unlabeled views (teacher view u_T, student view u_S):
  student  = online network on [x_l, u_S] (one pass, BatchNorm in training mode)
  p        = softmax(EMA network(u_T))   (the teacher; BatchNorm in training mode as the
                                          reference's EMA model, no gradient)
  loss_x   = CE(student_l, y)
  loss_u   = lambda_u * ramp(t) * mean_{i,k} (softmax(student_u) - p)^2
  ramp(t)  = min(t / 100000, 1)          (linear over 0.4 * 250k steps)
Hyper-parameters from configs/*/meanteacher.yaml: MSE weight 50, linear ramp-up with ratio
0.4 of 250k steps; EMA decay 0.999 (the teacher is the shared EMA network); unlabeled ratio
mu = 1 in the reference configs.

Unlabeled views: the reference feeds two weak views (student, teacher). A batch's two
views are used as (u_T, u_S) = (view 0, view 1): with the standard (u_w, u_s) layout the
teacher sees the weak view and the student the strong one. Give the data pipeline two weak
views to match the reference exactly.
"""

import keras
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.algorithms.ramps import linear_rampup
from daso_tf.losses import supervised_loss


@keras.saving.register_keras_serializable(package="daso_tf")
class MeanTeacher(SemiSupervisedModel):
    """Mean Teacher: MSE consistency between the student and the EMA teacher.

    Args (beyond ``SemiSupervisedModel``'s):
        lambda_u: weight of the MSE consistency loss (50).
        rampup_steps: linear ramp-up of loss_u (100000).
    """

    unlabeled_views = ("weak", "weak")

    def __init__(self, backbone, num_classes, lambda_u=50.0, rampup_steps=100000, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.lambda_u = float(lambda_u)
        self.rampup_steps = int(rampup_steps)

    def teacher_targets(self, batch, step):
        """Returns (p, outputs): the teacher's softmax; hook for DASO's blending."""
        logits = self.ema_network.features_and_logits(batch["u_views"][0], training=True)[1]
        probs = ops.softmax(ops.stop_gradient(ops.cast(logits, self.loss_dtype())), axis=-1)
        return probs, {"linear_pseudo_labels": ops.argmax(probs, axis=-1)}

    def forward_and_compute_losses(self, batch, step):
        dtype = self.loss_dtype()
        targets, outputs = self.teacher_targets(batch, step)
        targets = ops.stop_gradient(targets)
        x_l, u_student = batch["x_l"], batch["u_views"][1]
        if x_l.dtype != u_student.dtype:
            x_l, u_student = ops.cast(x_l, "float32"), ops.cast(u_student, "float32")
        num_labeled = ops.shape(x_l)[0]
        logits = self.online_network.features_and_logits(
            ops.concatenate([x_l, u_student], axis=0), training=True)[1]
        loss_x = ops.cast(supervised_loss(logits[:num_labeled], batch["y_l"]), dtype)
        student_probs = ops.softmax(ops.cast(logits[num_labeled:], dtype), axis=-1)
        loss_u = ops.mean(ops.square(student_probs - targets))
        loss_u = self.lambda_u * linear_rampup(step, self.rampup_steps, dtype) * loss_u
        outputs.update({"pseudo_labels": ops.argmax(targets, axis=-1),
                        "confidence": ops.max(targets, axis=-1)})
        return {"loss_x": loss_x, "loss_u": loss_u, "loss": loss_x + loss_u}, outputs

    def get_config(self):
        config = super().get_config()
        config.update({"lambda_u": self.lambda_u, "rampup_steps": self.rampup_steps})
        return config
