"""Mean Teacher + DASO, reference ``lib/algorithm/mean_teacher.py`` with APPLY_DASO (spec section 8).

On top of MeanTeacher (daso_tf.algorithms.mean_teacher):
  - every step the EMA network (BatchNorm in training mode) encodes [x_l, u_T] in one pass;
    the labeled features enter the queue, the unlabeled ones z_T give the teacher logits
    (EMA classifier) and q = softmax(cos(z_T, c) / T_proto) (prototypes after this push);
  - after ``warmup_steps`` the teacher target is blended, distribution-aware:
    p' = (1 - v[argmax p]) p + v[argmax p] q; p' is the MSE target;
  - blending only: no semantic alignment loss;
  - every step's argmax p' is counted in the pseudo-label histogram.
"""

import keras
from keras import ops

from daso_tf.algorithms.daso_components import DASOComponentsMixin
from daso_tf.algorithms.mean_teacher import MeanTeacher


@keras.saving.register_keras_serializable(package="daso_tf")
class MeanTeacherDASO(DASOComponentsMixin, MeanTeacher):
    """Mean Teacher with DASO's blended teacher targets (no L_align).

    Args (beyond ``MeanTeacher``'s): warmup_steps (5000), queue_size (256),
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

    def teacher_targets(self, batch, step):
        dtype = self.loss_dtype()
        x_l, u_teacher = batch["x_l"], batch["u_views"][0]
        if x_l.dtype != u_teacher.dtype:
            x_l, u_teacher = ops.cast(x_l, "float32"), ops.cast(u_teacher, "float32")
        num_labeled = ops.shape(x_l)[0]
        features = ops.stop_gradient(self.ema_network.features(
            ops.concatenate([x_l, u_teacher], axis=0), training=True))
        self.daso_enqueue(features[:num_labeled], batch["y_l"])
        teacher_features = features[num_labeled:]
        logits = self.ema_network.classifier(teacher_features)
        probs = ops.softmax(ops.cast(logits, dtype), axis=-1)
        semantic = self.daso_semantic_probs(teacher_features, dtype)
        outputs = {"linear_pseudo_labels": ops.argmax(probs, axis=-1),
                   "semantic_pseudo_labels": ops.where(self.daso_active(step), ops.argmax(semantic, axis=-1), -1)}
        return self.daso_blend(probs, semantic, step), outputs

    def after_optimizer_step(self, batch, outputs, step):
        self.daso_update_histogram(outputs["pseudo_labels"], step)

    def get_config(self):
        config = super().get_config()
        config.update(self.daso_config())
        config.pop("daso")
        return config
