"""Supervised baseline: labeled cross-entropy only (optionally train-time logit adjustment).

Reference: ytaek-oh/daso ``lib/algorithm/supervised.py`` and ``configs/*/supervised.yaml``:
- loss = CE(logits_l [+ tau * log prior], y) on the labeled batch only (one forward pass
  over x_l; the unlabeled part of a training batch, if any, is not used);
- its own optimiser: SGD Nesterov 0.9, coupled L2 5e-4, LR 0.1 with a linear warm-up from 0
  over 6250 steps and x0.01 decays at steps 199999 and 225000 (``WarmupMultiStepLR``);
  ``Supervised.default_optimizer()`` builds it and ``compile()`` uses it by default; a
  ``learning_rate`` given to it replaces the base LR 0.1 (warm-up and decays scale with it);
  a run of ``total_steps`` other than the reference's 250,000 gets the schedule stretched to
  its length (warm-up and decay steps at the same fractions of the run; identical at 250k),
  so a short run is not spent inside the reference's 6250-step warm-up;
- the reference evaluates the trained network itself (no EMA): ``ema_decay`` defaults to
  0.0, which makes the EMA network an exact copy of the online network after every step,
  so evaluate / predict / export (all on the EMA network) see the trained weights.
"""

import keras
import tensorflow as tf

from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.algorithms.lr_schedules import WarmupMultiStepSchedule
from daso_tf.losses import supervised_loss


@keras.saving.register_keras_serializable(package="daso_tf")
class Supervised(SemiSupervisedModel):
    """Labeled-only training ("Supervised" / "Supervised + LA" of the paper's Table 1).

    Args (beyond ``SemiSupervisedModel``'s; ``ema_decay`` defaults to 0.0, see above):
        logit_adjust: train-time logit adjustment with the labeled prior (needs
            ``labeled_class_counts``).
        logit_adjust_tau: its strength (1.0).

    Training batches: ``((x_l, y_l), unlabeled)`` (the standard layout; ``unlabeled`` is
    ignored) or ``(x_l, y_l)``.
    """

    unlabeled_views = ()

    def __init__(self, backbone, num_classes, logit_adjust=False, logit_adjust_tau=1.0,
                 ema_decay=0.0, **kwargs):
        super().__init__(backbone, num_classes, ema_decay=ema_decay, **kwargs)
        self.logit_adjust = bool(logit_adjust)
        self.logit_adjust_tau = float(logit_adjust_tau)
        if self.logit_adjust and self.labeled_class_counts is None:
            raise ValueError("logit_adjust=True needs labeled_class_counts (the labeled prior).")

    # The reference schedule (configs/*/supervised.yaml) of its 250k-step runs: BASE_LR 0.1,
    # WARMUP_ITERS 6250, STEPS (199999, 225000), GAMMA 0.01.
    REFERENCE_TOTAL_STEPS = 250_000
    BASE_LEARNING_RATE = 0.1
    WARMUP_STEPS = 6250
    MILESTONES = (199999, 225000)
    GAMMA = 0.01

    @classmethod
    def default_optimizer(cls, learning_rate=None, momentum=None, nesterov=None, weight_decay=None,
                          total_steps=None):
        """The reference's optimiser for the Supervised baseline (see the module docstring):
        ``learning_rate`` replaces the schedule's base LR; ``total_steps`` stretches the
        schedule to the run's length (the reference's steps at 250k); the other arguments as in
        ``SemiSupervisedModel.default_optimizer``."""
        base = cls.BASE_LEARNING_RATE if learning_rate is None else learning_rate
        scale = 1.0 if total_steps is None else int(total_steps) / cls.REFERENCE_TOTAL_STEPS
        warmup = max(1, round(cls.WARMUP_STEPS * scale))
        milestones = tuple(max(1, round(m * scale)) for m in cls.MILESTONES)
        schedule = WarmupMultiStepSchedule(base, warmup, milestones, cls.GAMMA)
        return super().default_optimizer(learning_rate=schedule, momentum=momentum, nesterov=nesterov,
                                         weight_decay=weight_decay, total_steps=total_steps)

    def unpack_train_batch(self, data):
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (tuple, list)):
            data = data[0]
        if not isinstance(data, (tuple, list)) or len(data) != 2 or isinstance(data[0], (tuple, list)):
            raise ValueError(
                "Supervised training batches must be ((x_labeled, y_labeled), unlabeled) or "
                f"(x_labeled, y_labeled); got {tf.nest.map_structure(lambda t: getattr(t, 'shape', t), data)}.")
        batch = {"x_l": data[0], "y_l": data[1]}
        self._check_images("x_l", batch["x_l"])
        self._check_labels("y_labeled", batch["y_l"])
        return batch

    @staticmethod
    def _image_shape_from_data(data):
        spec = getattr(data, "element_spec", None)
        if isinstance(spec, (tuple, list)) and isinstance(spec[0], tf.TensorSpec):
            return tuple(spec[0].shape)  # (x_l, y_l) batches
        return SemiSupervisedModel._image_shape_from_data(data)

    def forward_and_compute_losses(self, batch, step):
        logits = self.online_network.features_and_logits(batch["x_l"], training=True)[1]
        prior = self.labeled_prior() if self.logit_adjust else None
        loss_x = supervised_loss(logits, batch["y_l"], class_prior=prior, tau=self.logit_adjust_tau)
        loss_x = keras.ops.cast(loss_x, self.loss_dtype())
        return {"loss": loss_x, "loss_x": loss_x}, {}

    def get_config(self):
        config = super().get_config()
        config.update({"logit_adjust": self.logit_adjust, "logit_adjust_tau": self.logit_adjust_tau})
        return config
