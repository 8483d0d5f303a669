"""FixMatch + ABC (auxiliary balanced classifier), reference ``lib/algorithm/fm_abc.py``.

loss = loss_x + lambda_u * loss_u          (FixMatch on the linear classifier)
     + loss_abc                            (ABC head: see daso_tf.algorithms.abc_head)
One forward pass over [x_l, u_w, u_s]; both heads read the same features. Evaluation,
prediction and export use the EMA network's ABC head (``evaluation_head="abc_classifier"``),
as the reference evaluates ``ABCModel(is_train=False)``.
"""

import keras

from daso_tf.algorithms.abc_head import ABC_HEAD, AuxiliaryBalancedClassifierMixin
from daso_tf.algorithms.fixmatch import FixMatch


@keras.saving.register_keras_serializable(package="daso_tf")
class FixMatchABC(AuxiliaryBalancedClassifierMixin, FixMatch):
    """FixMatch with an auxiliary class-balanced classifier (needs ``labeled_class_counts``).

    Args (beyond ``FixMatch``'s):
        seed: seed of the model's ``keras.random.SeedGenerator`` (Bernoulli masks); its
            state is checkpointed with the model. None draws one.
    """

    def __init__(self, backbone, num_classes, seed=None, **kwargs):
        super().__init__(backbone, num_classes, auxiliary_heads=self.abc_heads(num_classes),
                         evaluation_head=ABC_HEAD, **kwargs)
        self.init_abc(seed)

    def compute_losses(self, batch, parts, step):
        return super().compute_losses(batch, dict(parts, labels=batch["y_l"]), step)

    def extra_losses(self, parts, extra_outputs, step):
        loss_abc, _ = self.abc_extra_losses(parts, step)
        return {"loss_abc": loss_abc}

    def total_loss(self, losses):
        return super().total_loss(losses) + losses["loss_abc"]

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config
