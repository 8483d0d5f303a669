"""USADTM (Han et al., NeurIPS 2020) in the simplified form the DASO reference ships
(``lib/algorithm/usadtm.py``, ``lib/models/usadtm_model.py``, ``losses/tmi_loss.py``).

Per step t (0-based), with three views of each unlabeled image (u_id: the image itself,
only resized; u_w: weak; u_s: strong):
  h, z     = f([x_l; u_id; u_w; u_s])   (one pass, BatchNorm in training mode; h: features)
  banks    : per class k a FIFO of the last 5 * N_k labeled features sg(h_l) (N_k: labeled
             images of class k); prototype mu_k = the mean of bank k, refreshed for the
             classes of this batch after pushing it (zero until class k is first seen)
  loss_x   = CE(z_l, y)
  loss_uc  = lambda_uc * [I(z_id, z_w) + I(z_id, z_s) + I(z_w, z_s)] / 3     (from step 0)
             I(a, b) = IIC mutual-information loss, ``iic_loss``; gradients through all views
  after ``warmup_steps`` (t >= 500), without gradient:
    y^     = argmax_k cos(h_w, mu_k),  conf = max_k cos(h_w, mu_k)
    y^_d   = argmin_k ||h_w - mu_k||
    mask   = [y^ == y^_d] * [conf >= threshold]                                (0.85)
    loss_u = lambda_u * sum_i mask_i * CE(z_s_i, y^_i) / B_u
  before it loss_u = 0;  loss = loss_x + loss_uc + loss_u.
Evaluation uses the EMA network's linear classifier; the prototypes are training-only.

Where the reference crashes or cannot run as shipped, daso_tf does what it evidently means:
``ALGORITHM.USADTM.WITH_EMA_PROTOTYPE`` is read but never defined (the config cannot be
built): the prototypes come from the online network's features (its only implemented
branch); its default unlabeled loss (MSE) cannot take hard labels: loss_u is the masked
cross-entropy above; ``WARMUP_CLUSTER_LOSS`` sets a flag nothing reads: loss_uc is on from
step 0. The reference's unlabeled ratio is 1 (run.py: ``data.unlabeled_ratio=1``).

Under several replicas the banks see the all-gathered labeled batch (identical on every
replica); the IIC joint distribution is each replica's own (local batch).
"""

import sys

import keras
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel, all_gather
from daso_tf.layers import PrototypeQueue
from daso_tf.losses import masked_cross_entropy, supervised_loss
from daso_tf.pseudo_labels import cosine_similarity

# The reference clamps the joint and the marginals at Python's float epsilon.
IIC_EPSILON = sys.float_info.epsilon
# Bank length per class: this many times the class's labeled count (the reference's 5x).
BANK_SIZE_FACTOR = 5


def iic_loss(logits_a, logits_b):
    """IIC's mutual-information loss -I(a; b) of two views' predictions (``MI_loss``).

    P = sum_i softmax(a_i) softmax(b_i)^T, symmetrised, normalised to sum 1; its row and
    column marginals are taken, then P and both marginals are clamped at ``IIC_EPSILON``;
    the loss is -sum_jk P_jk (log P_jk - log p_row_j - log p_col_k). Clamped entries get no
    gradient.
    """
    probs_a, probs_b = ops.softmax(logits_a, axis=-1), ops.softmax(logits_b, axis=-1)
    joint = ops.matmul(ops.transpose(probs_a), probs_b)  # [K, K]
    joint = (joint + ops.transpose(joint)) / 2.0
    joint = joint / ops.sum(joint)
    rows = ops.sum(joint, axis=1, keepdims=True)
    columns = ops.sum(joint, axis=0, keepdims=True)
    epsilon = ops.convert_to_tensor(IIC_EPSILON, joint.dtype)
    joint, rows, columns = (ops.maximum(t, epsilon) for t in (joint, rows, columns))
    return -ops.sum(joint * (ops.log(joint) - ops.log(rows) - ops.log(columns)))


def prototype_pseudo_labels(features, prototypes, threshold):
    """USADTM's pseudo-labels of ``features`` [B, D] from ``prototypes`` [K, D].

    Returns ``(labels, confidence, mask)``: the most cosine-similar prototype, that
    similarity, and 1.0 where it is also the nearest prototype in Euclidean distance (as the
    reference computes it: sqrt(max(|h|^2 + |mu|^2 - 2 h.mu, 1e-12))) and the similarity is
    at least ``threshold``.
    """
    similarity = cosine_similarity(features, prototypes)
    labels, confidence = ops.argmax(similarity, axis=-1), ops.max(similarity, axis=-1)
    squared = (ops.sum(ops.square(features), axis=-1, keepdims=True)
               + ops.sum(ops.square(prototypes), axis=-1)[None, :]
               - 2.0 * ops.matmul(features, ops.transpose(prototypes)))
    nearest = ops.argmin(ops.sqrt(ops.maximum(squared, 1e-12)), axis=-1)
    mask = ops.logical_and(labels == nearest, confidence >= threshold)
    return labels, confidence, ops.cast(mask, features.dtype)


@keras.saving.register_keras_serializable(package="daso_tf")
class USADTM(SemiSupervisedModel):
    """Unsupervised semantic aggregation (IIC) + deformable template matching (prototypes).

    Args (beyond ``SemiSupervisedModel``'s; needs ``labeled_class_counts`` for the banks):
        threshold: cosine-similarity threshold of the prototype pseudo-labels (0.85).
        lambda_u: weight of the pseudo-label loss (1.0).
        lambda_uc: weight of the IIC clustering loss (0.1).
        warmup_steps: steps before the pseudo-label loss starts (500).
    """

    unlabeled_views = ("identity", "weak", "strong")

    def __init__(self, backbone, num_classes, threshold=0.85, lambda_u=1.0, lambda_uc=0.1,
                 warmup_steps=500, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if self.labeled_class_counts is None:
            raise ValueError("USADTM needs labeled_class_counts (its banks hold 5 x N_k features per class).")
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}.")
        self.threshold = float(threshold)
        self.lambda_u = float(lambda_u)
        self.lambda_uc = float(lambda_uc)
        self.warmup_steps = int(warmup_steps)

    def build_state(self, feature_dim):
        sizes = [BANK_SIZE_FACTOR * count for count in self.labeled_class_counts]
        self.banks = PrototypeQueue(self.num_classes, feature_dim, sizes, name="banks")

    def forward_and_compute_losses(self, batch, step):
        dtype = self.loss_dtype()
        x_l, y_l = batch["x_l"], batch["y_l"]
        (features_l, _, features_w, _), (logits_l, logits_id, logits_w, logits_s) = self.online_forward(
            [x_l] + list(batch["u_views"]))
        labeled = ops.stop_gradient(ops.cast(features_l, self.banks.variable_dtype))
        prototypes = self.banks.enqueue(all_gather(labeled), all_gather(y_l))

        logits_id, logits_w, logits_s = (ops.cast(z, dtype) for z in (logits_id, logits_w, logits_s))
        loss_x = ops.cast(supervised_loss(logits_l, y_l), dtype)
        loss_uc = self.lambda_uc * (iic_loss(logits_id, logits_w) + iic_loss(logits_id, logits_s)
                                    + iic_loss(logits_w, logits_s)) / 3.0

        weak = ops.stop_gradient(ops.cast(features_w, dtype))
        labels, confidence, mask = prototype_pseudo_labels(weak, ops.cast(prototypes, dtype), self.threshold)
        active = step >= self.warmup_steps
        mask = ops.where(active, mask, ops.zeros_like(mask))
        loss_u = self.lambda_u * ops.cast(masked_cross_entropy(logits_s, labels, mask), dtype)
        outputs = {"pseudo_labels": ops.where(active, labels, -ops.ones_like(labels)),
                   "confidence": confidence, "mask": mask}
        losses = {"loss_x": loss_x, "loss_uc": loss_uc, "loss_u": loss_u, "loss": loss_x + loss_uc + loss_u}
        return losses, outputs

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold, "lambda_u": self.lambda_u, "lambda_uc": self.lambda_uc,
                       "warmup_steps": self.warmup_steps})
        return config
