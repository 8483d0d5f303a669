"""MixMatch (Berthelot et al., 2019) as the DASO reference runs it (``lib/algorithm/mixmatch.py``).

Per step t, with two unlabeled views (u_1, u_2):
  p       = (softmax(f(u_1)) + softmax(f(u_2))) / 2     (no gradient)
  y_u     = sharpen(p, T)                                (T = 0.5)
  MixUp of [x_l, u_1, u_2] with [onehot(y), y_u, y_u]:
          lam ~ Beta(a, a), lam = max(lam, 1 - lam), one random permutation over all
  loss_x  = soft-CE(mixed labeled logits, mixed labeled targets)
  loss_u  = lambda_u * ramp(t) * mean_{i,k} (softmax(mixed unlabeled logits) - targets)^2
  ramp(t) = min(t / 4000, 1)                  (linear over 0.016 * 250k steps)
Hyper-parameters from configs/{cifar10,cifar100}/mixmatch.yaml: T 0.5, MixUp alpha 0.5
(the MixMatch paper uses 0.75), MSE weight 100, linear ramp-up over 4000 steps; unlabeled
ratio mu = 1 in the reference configs.

Forward passes (BatchNorm in training mode): u_1 and u_2 separately for the guess (as the
reference), then one pass over the whole mixed batch (deviation: the reference splits it
into interleaved chunks of B; same losses, BatchNorm statistics over the whole batch).

Unlabeled views: the reference feeds two weak views. A batch's two views are used as
(u_1, u_2); with the standard (u_w, u_s) layout u_2 is the strongly augmented view. Give
the data pipeline two weak views to match the reference exactly.
Randomness (Beta, permutation) comes from the model's SeedGenerator (checkpointed).
"""

import keras
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.algorithms.mixing import mixup, mixup_lambda, random_permutation, sharpen, soft_cross_entropy
from daso_tf.algorithms.ramps import linear_rampup


@keras.saving.register_keras_serializable(package="daso_tf")
class MixMatch(SemiSupervisedModel):
    """MixMatch: averaged, sharpened guesses on two views, MixUp, MSE consistency.

    Args (beyond ``SemiSupervisedModel``'s):
        temperature: sharpening temperature T (0.5).
        mixup_alpha: Beta(alpha, alpha) of MixUp (0.5, the reference configs).
        lambda_u: weight of the MSE consistency loss (100).
        rampup_steps: linear ramp-up of loss_u (4000).
        seed: seed of the model's SeedGenerator (None draws one).
    """

    unlabeled_views = ("weak", "weak")

    def __init__(self, backbone, num_classes, temperature=0.5, mixup_alpha=0.5, lambda_u=100.0,
                 rampup_steps=4000, seed=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if float(temperature) <= 0 or float(mixup_alpha) <= 0:
            raise ValueError(f"temperature and mixup_alpha must be > 0; got {temperature}, {mixup_alpha}.")
        self.temperature = float(temperature)
        self.mixup_alpha = float(mixup_alpha)
        self.lambda_u = float(lambda_u)
        self.rampup_steps = int(rampup_steps)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.seed_state = self.seed_generator.state  # tracked, so tf.train.Checkpoint saves it

    def guess_targets(self, logits_1, logits_2, features_1, step):
        """Returns (y_u, outputs): average then sharpen; hook for DASO's blending."""
        dtype = self.loss_dtype()
        probs = (ops.softmax(ops.cast(logits_1, dtype), axis=-1)
                 + ops.softmax(ops.cast(logits_2, dtype), axis=-1)) / 2.0
        targets = sharpen(ops.stop_gradient(probs), self.temperature)
        return targets, {"linear_pseudo_labels": ops.argmax(targets, axis=-1)}

    def forward_and_compute_losses(self, batch, step):
        dtype = self.loss_dtype()
        u_1, u_2 = batch["u_views"]
        num_labeled = ops.shape(batch["x_l"])[0]
        images = [ops.cast(view, self.online_network.variable_dtype) for view in (batch["x_l"], u_1, u_2)]
        features_1, logits_1 = self.online_network.features_and_logits(images[1], training=True)
        logits_2 = self.online_network(images[2], training=True)
        features_1, logits_1, logits_2 = (ops.stop_gradient(t) for t in (features_1, logits_1, logits_2))
        targets, outputs = self.guess_targets(logits_1, logits_2, features_1, step)
        targets = ops.stop_gradient(targets)

        labels = ops.one_hot(ops.cast(batch["y_l"], "int32"), self.num_classes, dtype=dtype)
        all_images = ops.concatenate(images, axis=0)
        all_targets = ops.concatenate([labels, targets, targets], axis=0)
        lam = mixup_lambda(self.mixup_alpha, self.seed_generator, dtype)
        permutation = random_permutation(ops.shape(all_images)[0], self.seed_generator)
        mixed_images, mixed_targets = mixup(all_images, all_targets, lam, permutation)
        mixed_logits = ops.cast(self.online_network.features_and_logits(mixed_images, training=True)[1], dtype)
        loss_x = soft_cross_entropy(mixed_logits[:num_labeled], mixed_targets[:num_labeled])
        unlabeled_probs = ops.softmax(mixed_logits[num_labeled:], axis=-1)
        loss_u = ops.mean(ops.square(unlabeled_probs - ops.stop_gradient(mixed_targets[num_labeled:])))
        loss_u = self.lambda_u * linear_rampup(step, self.rampup_steps, dtype) * loss_u
        losses = {"loss_x": loss_x, "loss_u": loss_u, "loss": loss_x + loss_u}
        outputs.update({"pseudo_labels": ops.argmax(targets, axis=-1),
                        "confidence": ops.max(targets, axis=-1), "mixup_lambda": lam})
        return losses, outputs

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "mixup_alpha": self.mixup_alpha,
                       "lambda_u": self.lambda_u, "rampup_steps": self.rampup_steps, "seed": self.seed})
        return config
