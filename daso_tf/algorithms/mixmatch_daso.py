"""MixMatch + DASO, reference ``lib/algorithm/mixmatch.py`` with APPLY_DASO (docs/algorithm.md section 5).

On top of MixMatch (daso_tf.algorithms.mixmatch):
  - every step the EMA network (BatchNorm in training mode) encodes x_l into the queue;
  - after ``warmup_steps`` the sharpened guess y_u is blended with q = softmax(cos(z_1, c) /
    T_proto) of the online features of the first view u_1, distribution-aware:
    y_u' = (1 - v[argmax y_u]) y_u + v[argmax y_u] q; y_u' enters MixUp;
  - blending only: no semantic alignment loss;
  - every step's argmax y_u' is counted in the pseudo-label histogram.
"""

import keras
from keras import ops

from daso_tf.algorithms.daso_components import DASOComponentsMixin
from daso_tf.algorithms.mixmatch import MixMatch


@keras.saving.register_keras_serializable(package="daso_tf")
class MixMatchDASO(DASOComponentsMixin, MixMatch):
    """MixMatch with DASO's blended pseudo-labels (no L_align).

    Args (beyond ``MixMatch``'s): warmup_steps (5000), queue_size (256),
    histogram_period (100), dist_temperature (1.5; 0.3 when gamma_l != gamma_u),
    proto_temperature (0.05), total_steps (see DASO).
    """

    def __init__(self, backbone, num_classes, warmup_steps=5000, queue_size=256,
                 histogram_period=100, dist_temperature=1.5, proto_temperature=0.05,
                 total_steps=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.init_daso(True, warmup_steps, queue_size, histogram_period, dist_temperature,
                       proto_temperature, total_steps)

    def build_state(self, feature_dim):
        self.build_daso_state(feature_dim)

    def before_online_forward(self, batch, step):
        self.daso_enqueue(self.ema_network.features(batch["x_l"], training=True), batch["y_l"])

    def guess_targets(self, logits_1, logits_2, features_1, step):
        targets, outputs = super().guess_targets(logits_1, logits_2, features_1, step)
        semantic = self.daso_semantic_probs(features_1, targets.dtype)
        outputs["semantic_pseudo_labels"] = ops.where(self.daso_active(step), ops.argmax(semantic, axis=-1), -1)
        return self.daso_blend(targets, semantic, step), outputs

    def after_optimizer_step(self, batch, outputs, step):
        self.daso_update_histogram(outputs["pseudo_labels"], step)

    def get_config(self):
        config = super().get_config()
        config.update(self.daso_config())
        config.pop("daso")
        return config
