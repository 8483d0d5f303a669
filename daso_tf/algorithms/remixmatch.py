"""ReMixMatch (Berthelot et al., 2020) as the DASO reference runs it (``lib/algorithm/remixmatch.py``).

Per step t, with unlabeled views (u_w, u_s1, u_s2):
  p        = softmax(f(u_w))                              (no gradient)
  p~       = DistributionAlignment(p)                     (target: labeled prior; 128-batch mean)
  y_u      = sharpen(p~, T)                               (T = 0.5)
  MixUp of [x_l, u_w, u_s1, u_s2] with [onehot(y), y_u, y_u, y_u]:
           lam ~ Beta(a, a), lam = max(lam, 1 - lam), one random permutation over all
  loss_x   = soft-CE(mixed labeled logits, mixed labeled targets)
  loss_u   = lambda_u * ramp(t) * soft-CE(mixed unlabeled)        (lambda_u = 1.5)
  loss_kl  = lambda_kl * ramp(t) * soft-CE(f(u_s1), y_u)          (pre-mixup loss, 0.5)
  loss_rot = lambda_rot * CE(rotation_head(f(rot(u_s1, r))), r)   (r uniform in {0..3}, 0.5)
  ramp(t)  = min(t / 4000, 1)                  (linear over 0.016 * 250k steps)
Hyper-parameters from configs/*/remixmatch.yaml (T 0.5, MixUp alpha 0.75, weights 1.5 /
0.5 / 0.5, linear ramp-up over 4000 steps, DIST_ALIGN on) and lib/config/defaults.py
(DA temperature 1.0, 128 batches); unlabeled ratio mu = 1 in the reference configs.

Forward passes (BatchNorm in training mode): one over [u_w, u_s1] (the guess uses the weak
half without gradient, the pre-mixup loss the strong half), one over the whole mixed batch,
one over the rotated u_s1. Deviation: the reference makes separate passes for u_w and
u_s1 and splits the mixed batch into interleaved chunks of B; one pass per group gives the
same losses with BatchNorm statistics over the group.

Unlabeled views: the reference feeds (weak, strong, strong). A batch with three views
uses them as (u_w, u_s1, u_s2); the standard (u_w, u_s) layout uses u_s for both strong
views (the MixUp pool then holds u_s twice). Give the data pipeline a second strong view
to match the reference exactly.
Randomness (Beta, permutation, rotations) comes from the model's SeedGenerator
(checkpointed).
"""

import keras
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.algorithms.distribution_alignment import DistributionAlignment
from daso_tf.algorithms.mixing import (mixup, mixup_lambda, random_permutation, rotate_images,
                                       sharpen, soft_cross_entropy)
from daso_tf.algorithms.ramps import linear_rampup

ROTATION_HEAD = "rotation_head"


@keras.saving.register_keras_serializable(package="daso_tf")
class ReMixMatch(SemiSupervisedModel):
    """ReMixMatch with distribution alignment, sharpening, MixUp, pre-mixup and rotation losses.

    Args (beyond ``SemiSupervisedModel``'s):
        temperature: sharpening temperature T (0.5).
        mixup_alpha: Beta(alpha, alpha) of MixUp (0.75).
        lambda_u: weight of the mixed unlabeled loss (1.5).
        lambda_kl: weight of the pre-mixup loss on u_s1 (0.5).
        lambda_rot: weight of the rotation loss (0.5).
        rampup_steps: linear ramp-up of loss_u and loss_kl (4000).
        distribution_alignment: apply DA (True; needs ``labeled_class_counts``).
        alignment_history: batches averaged by DA (128).
        seed: seed of the model's SeedGenerator (None draws one).
    """

    unlabeled_views = ("weak", "strong", "strong")

    def __init__(self, backbone, num_classes, temperature=0.5, mixup_alpha=0.75, lambda_u=1.5,
                 lambda_kl=0.5, lambda_rot=0.5, rampup_steps=4000, distribution_alignment=True,
                 alignment_history=128, seed=None, **kwargs):
        kwargs["auxiliary_heads"] = [(ROTATION_HEAD, 4)]
        super().__init__(backbone, num_classes, **kwargs)
        if float(temperature) <= 0 or float(mixup_alpha) <= 0:
            raise ValueError(f"temperature and mixup_alpha must be > 0; got {temperature}, {mixup_alpha}.")
        self.temperature = float(temperature)
        self.mixup_alpha = float(mixup_alpha)
        self.lambda_u = float(lambda_u)
        self.lambda_kl = float(lambda_kl)
        self.lambda_rot = float(lambda_rot)
        self.rampup_steps = int(rampup_steps)
        self.distribution_alignment = bool(distribution_alignment)
        self.alignment_history = int(alignment_history)
        if self.distribution_alignment:
            if self.labeled_class_counts is None:
                raise ValueError("distribution_alignment=True needs labeled_class_counts "
                                 "(DA's target is the labeled class distribution).")
            self.aligner = DistributionAlignment(self.labeled_class_counts, self.alignment_history,
                                                 name="distribution_alignment")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.seed_state = self.seed_generator.state  # tracked, so tf.train.Checkpoint saves it

    def select_unlabeled_views(self, views):
        return self.select_weak_and_two_strong_views(views)

    # ------------------------------------------------------------------ pseudo-label
    def guess_targets(self, weak_logits, weak_features, step):
        """Returns (y_u, outputs): DA then sharpening; hook for DASO's blending."""
        dtype = self.loss_dtype()
        probs = ops.softmax(ops.stop_gradient(ops.cast(weak_logits, dtype)), axis=-1)
        linear_probs = probs
        if self.distribution_alignment:
            probs = self.aligner(probs, temperature=self.alignment_temperature(step))
        targets = sharpen(probs, self.temperature)
        return targets, {"linear_pseudo_labels": ops.argmax(linear_probs, axis=-1)}

    def alignment_temperature(self, step):
        """Hook: the temperature of DA's target at ``step`` (None: the aligner's own, 1.0)."""
        return None

    def consistency_ramp(self, step, dtype):
        """The weight ramp of loss_u and loss_kl at ``step`` (linear over ``rampup_steps``)."""
        return linear_rampup(step, self.rampup_steps, dtype)

    def alignment_losses(self, outputs, strong_features, step):
        """Hook: extra loss terms from the [u_w, u_s1] features (DASO: loss_align)."""
        return {}

    # ------------------------------------------------------------------ train step
    def forward_and_compute_losses(self, batch, step):
        dtype = self.loss_dtype()
        x_l, y_l = batch["x_l"], batch["y_l"]
        u_w, u_s1, u_s2 = batch["u_views"]
        num_labeled, num_unlabeled = ops.shape(x_l)[0], ops.shape(u_w)[0]
        images = [ops.cast(view, self.online_network.variable_dtype) for view in (x_l, u_w, u_s1, u_s2)]
        ramp = self.consistency_ramp(step, dtype)

        features, logits = self.online_network.features_and_logits(
            ops.concatenate([images[1], images[2]], axis=0), training=True)
        weak_features, strong_features = features[:num_unlabeled], features[num_unlabeled:]
        targets, outputs = self.guess_targets(logits[:num_unlabeled], weak_features, step)
        targets = ops.stop_gradient(targets)
        losses = {"loss_kl": self.lambda_kl * ramp * soft_cross_entropy(
            ops.cast(logits[num_unlabeled:], dtype), targets)}
        losses.update(self.alignment_losses(outputs, strong_features, step))

        labels = ops.one_hot(ops.cast(y_l, "int32"), self.num_classes, dtype=dtype)
        all_images = ops.concatenate(images, axis=0)
        all_targets = ops.concatenate([labels, targets, targets, targets], axis=0)
        lam = mixup_lambda(self.mixup_alpha, self.seed_generator, dtype)
        permutation = random_permutation(ops.shape(all_images)[0], self.seed_generator)
        mixed_images, mixed_targets = mixup(all_images, all_targets, lam, permutation)
        mixed_logits = ops.cast(self.online_network.features_and_logits(mixed_images, training=True)[1], dtype)
        losses["loss_x"] = soft_cross_entropy(mixed_logits[:num_labeled], mixed_targets[:num_labeled])
        losses["loss_u"] = self.lambda_u * ramp * soft_cross_entropy(
            mixed_logits[num_labeled:], mixed_targets[num_labeled:])

        rotations = keras.random.randint((num_unlabeled,), 0, 4, seed=self.seed_generator, dtype="int32")
        rotated = rotate_images(images[2], rotations)
        rotation_logits = self.online_network.head(ROTATION_HEAD)(
            self.online_network.features(rotated, training=True))
        losses["loss_rot"] = self.lambda_rot * ops.mean(ops.sparse_categorical_crossentropy(
            rotations, ops.cast(rotation_logits, dtype), from_logits=True))
        losses = {key: ops.cast(value, dtype) for key, value in losses.items()}
        losses["loss"] = sum(losses.values())
        outputs.update({"pseudo_labels": ops.argmax(targets, axis=-1),
                        "confidence": ops.max(targets, axis=-1), "mixup_lambda": lam})
        return losses, outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "temperature": self.temperature, "mixup_alpha": self.mixup_alpha,
            "lambda_u": self.lambda_u, "lambda_kl": self.lambda_kl, "lambda_rot": self.lambda_rot,
            "rampup_steps": self.rampup_steps, "distribution_alignment": self.distribution_alignment,
            "alignment_history": self.alignment_history, "seed": self.seed,
        })
        return config

