"""FixMatch + CReST+ (the DASO reference's ``lib/algorithm/fm_crest.py``, ``configs/*/fixmatch_crest.yaml``).

FixMatch's step with CReST+'s distribution alignment of the pseudo-labels:
  p        = softmax(logits_w)                                   (no gradient)
  p~       = normalize(p * (pi_t + 1e-6) / (mean p over the last 128 batches + 1e-6)),
             pi_t = prior_labeled^t / sum(prior_labeled^t), t = the generation's temperature
  loss_u   = sum_i mask_i * CE(logits_s_i, argmax p~_i) / B_u,   mask = max p~ >= 0.95
  loss     = loss_x + lambda_u * loss_u
inside the generations of ``daso_tf.algorithms.crest`` (5 generations; after each, the
labeled set grows by a class-rebalanced selection of pseudo-labeled samples and training
restarts from fresh weights). The reference turns the alignment off on STL-10
(``distribution_alignment`` defaults to False there: the run passes it when the unlabeled
labels are unknown). Train-time logit adjustment (off in the reference), when on, uses the
current labeled set's prior, as the reference does.

Hyper-parameters: ``configs/*/fixmatch_crest.yaml`` (CREST: GEN_PERIOD_STEPS 50000 of
MAX_ITER 250000, ALPHA 3.0, TMIN 0.5, PROGRESSIVE_ALIGN True; DIST_ALIGN on; threshold
0.95, lambda_u 1) and ``defaults.py`` (DA temperature 1, 128 batches).
"""

import keras
from keras import ops

from daso_tf.algorithms.crest import CReSTGenerations
from daso_tf.algorithms.distribution_alignment import DistributionAlignment
from daso_tf.algorithms.fixmatch import FixMatch
from daso_tf.losses import supervised_loss


@keras.saving.register_keras_serializable(package="daso_tf")
class FixMatchCReST(CReSTGenerations, FixMatch):
    """FixMatch with CReST+ generations and progressive distribution alignment.

    Args (beyond ``FixMatch``'s and ``CReSTGenerations``'):
        distribution_alignment: align pseudo-labels to the labeled prior (True: CReST+).
        alignment_history: batches the alignment averages (128).
        seed: seeds the fresh weights of every generation (None draws them unseeded).
    """

    def __init__(self, backbone, num_classes, distribution_alignment=True, alignment_history=128, seed=None,
                 **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.distribution_alignment = bool(distribution_alignment)
        self.alignment_history = int(alignment_history)
        self.seed = seed
        if self.distribution_alignment:
            self.aligner = DistributionAlignment(self.labeled_class_counts, self.alignment_history,
                                                 name="distribution_alignment")

    def refine_pseudo_labels(self, linear_probs, parts, step):
        if not self.distribution_alignment:
            return linear_probs, {}
        return self.aligner(linear_probs, temperature=self.alignment_temperature(step)), {}

    def labeled_loss(self, logits_l, labels):
        if not self.logit_adjust:
            return super().labeled_loss(logits_l, labels)
        prior = ops.cast(self.current_labeled_counts, self.loss_dtype())
        return supervised_loss(logits_l, labels, class_prior=prior, tau=self.logit_adjust_tau)

    def get_config(self):
        config = super().get_config()
        config.update({"distribution_alignment": self.distribution_alignment,
                       "alignment_history": self.alignment_history, "seed": self.seed})
        return config
