"""ReMixMatch + CReST+ (the DASO reference's ``lib/algorithm/rm_crest.py``,
``configs/*/remixmatch_crest.yaml``).

ReMixMatch's step (``daso_tf.algorithms.remixmatch``) inside the generations of
``daso_tf.algorithms.crest``, with CReST+'s changes:
  - distribution alignment of the guess uses the generation's temperature t_g
    (progressive alignment: 1.0 ... 0.5 over the 5 generations);
  - the ramp-up of loss_u and loss_kl restarts every generation and lasts 0.016 of a
    generation (800 of 50,000 steps in the reference; ``rampup_steps`` unset);
  - the EMA warm-up restarts every generation.
The reference turns the alignment off on STL-10 (``distribution_alignment`` defaults to
False there: the run passes it when the unlabeled labels are unknown); its shipped
STL-10 ``remixmatch_crest.yaml`` names plain ReMixMatch, so that setting is unverified.

Hyper-parameters: ReMixMatch's (T 0.5, MixUp alpha 0.75, weights 1.5 / 0.5 / 0.5, DA on
with 128 batches) and CReST's (5 generations, alpha 3, t_min 0.5). The reference feeds
64 unlabeled images per step (``data.unlabeled_ratio=1``).
"""

import keras

from daso_tf.algorithms.crest import CReSTGenerations
from daso_tf.algorithms.ramps import linear_rampup
from daso_tf.algorithms.remixmatch import ReMixMatch

RAMPUP_FRACTION = 0.016  # CONS_RAMPUP_ITERS_RATIO, of one generation


@keras.saving.register_keras_serializable(package="daso_tf")
class ReMixMatchCReST(CReSTGenerations, ReMixMatch):
    """ReMixMatch with CReST+ generations and progressive distribution alignment.

    Args (beyond ``ReMixMatch``'s and ``CReSTGenerations``'):
        rampup_steps: the per-generation ramp-up length; None (the reference) = 0.016 of a
            generation, ``round(0.016 * total_steps // num_generations)``.
    """

    def __init__(self, backbone, num_classes, rampup_steps=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if rampup_steps is None:
            rampup_steps = round(RAMPUP_FRACTION * self.generation_period)
        self.rampup_steps = int(rampup_steps)

    def consistency_ramp(self, step, dtype):
        return linear_rampup(self.generation_step(step), self.rampup_steps, dtype)
