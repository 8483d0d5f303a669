"""ReMixMatch + DASO, reference ``lib/algorithm/rm_daso.py`` (docs/algorithm.md section 5).

On top of ReMixMatch (daso_tf.algorithms.remixmatch):
  - every step the EMA network (BatchNorm in training mode) encodes x_l into the queue;
  - after ``warmup_steps`` the ReMixMatch target y_u (AFTER distribution alignment and
    sharpening) is blended with q = softmax(cos(z_w, c) / T_proto) of the online weak
    features, always distribution-aware: y_u' = (1 - v[argmax y_u]) y_u + v[argmax y_u] q;
    y_u' is the target of the pre-mixup loss and of MixUp;
  - L_align = soft-CE(softmax(cos(z_s1, c) / T_proto), q) on the FIRST strong view, weight
    ``lambda_align`` (1.0), not ramped;
  - every step's argmax y_u' (unmasked) is counted in the pseudo-label histogram.
Note: the reference configs remixmatch_daso.yaml set DIST_ALIGN.APPLY False (the spec keeps
DA on); pass ``distribution_alignment=False`` to reproduce those runs.
"""

import keras
from keras import ops

from daso_tf.algorithms.daso_components import DASOComponentsMixin
from daso_tf.algorithms.remixmatch import ReMixMatch


@keras.saving.register_keras_serializable(package="daso_tf")
class ReMixMatchDASO(DASOComponentsMixin, ReMixMatch):
    """ReMixMatch with DASO's blended pseudo-labels and semantic alignment loss.

    Args (beyond ``ReMixMatch``'s): warmup_steps (5000), queue_size (256),
    histogram_period (100), dist_temperature (1.5; 0.3 when gamma_l != gamma_u),
    proto_temperature (0.05), lambda_align (1.0), total_steps (see DASO).
    """

    def __init__(self, backbone, num_classes, warmup_steps=5000, queue_size=256,
                 histogram_period=100, dist_temperature=1.5, proto_temperature=0.05,
                 lambda_align=1.0, total_steps=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.init_daso(True, warmup_steps, queue_size, histogram_period, dist_temperature,
                       proto_temperature, total_steps)
        self.lambda_align = float(lambda_align)

    def build_state(self, feature_dim):
        self.build_daso_state(feature_dim)

    def before_online_forward(self, batch, step):
        self.daso_enqueue(self.ema_network.features(batch["x_l"], training=True), batch["y_l"])

    def guess_targets(self, weak_logits, weak_features, step):
        targets, outputs = super().guess_targets(weak_logits, weak_features, step)
        semantic = self.daso_semantic_probs(weak_features, targets.dtype)
        outputs.update({"semantic_probs": semantic,
                        "semantic_pseudo_labels": ops.where(self.daso_active(step), ops.argmax(semantic, axis=-1), -1)})
        return self.daso_blend(targets, semantic, step), outputs

    def alignment_losses(self, outputs, strong_features, step):
        loss_align = self.daso_alignment_loss(outputs["semantic_probs"], strong_features, step)
        return {"loss_align": self.lambda_align * loss_align}

    def after_optimizer_step(self, batch, outputs, step):
        self.daso_update_histogram(outputs["pseudo_labels"], step)

    def get_config(self):
        config = super().get_config()
        config.update(self.daso_config())
        config.pop("daso")
        config["lambda_align"] = self.lambda_align
        return config
