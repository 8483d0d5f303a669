"""cRT, classifier re-training (Kang et al., ICLR 2020), as the DASO reference runs it
(``lib/algorithm/classifier_retraining.py``, ``lib/dataset/loader/class_aware_sampler.py``).

A second stage after a finished run of any learner:
  1. the encoder is the finished run's ONLINE encoder (weights and BatchNorm moving
     statistics; not the EMA one), frozen: no gradient, hence no weight decay;
  2. the linear classifier is fresh (Xavier-normal weight, zero bias);
  3. per step: x_l (weak view) drawn class-aware -- with replacement, image i of class c
     with probability proportional to (1 - beta) / (1 - beta^n_c), beta = 0.999 (the
     reference's ClassAwareSampler; run.py draws the labeled batches so, see
     ``daso_tf.data.pipeline.class_aware_weights``) -- and
       loss = loss_x = CE(classifier(encoder(x_l)), y)
     with the encoder in TRAINING mode: BatchNorm normalises with batch statistics and keeps
     updating its moving statistics, although its scale and offset are frozen (Keras'
     ``trainable = False`` would switch BatchNorm to inference mode; the encoder's variables
     are hidden from the optimiser instead);
  4. the optimiser is the reference SGD (constant LR 0.03, Nesterov 0.9, coupled L2 5e-4).
Evaluation is the ONLINE network in inference mode (the reference evaluates ``self.model``
for cRT): with ``ema_decay`` 0 the EMA network, which evaluate / predict / export use, is an
exact copy of the online network after every step.

The reference's setup crashes as shipped (``rebuild_model`` unpacks ``evaluate()``'s dict
into two values); daso_tf runs it without that report line. The unlabeled set is not used.

run.py: ``algorithm.name=crt,algorithm.base_run=<model_dir of a finished run>`` with the
base run's experiment and data keys (refused otherwise); the run calls ``load_encoder``
with the base run's final checkpoint. In your own code: build the model, then
``load_encoder(checkpoint_path)`` (a daso_tf training checkpoint of any learner with the
same backbone) or ``copy_encoder(trained_learner)``.
"""

import keras
import tensorflow as tf

from daso_tf.algorithms.supervised import Supervised
from daso_tf.losses import supervised_loss


@keras.saving.register_keras_serializable(package="daso_tf")
class CRT(Supervised):
    """A fresh linear classifier on a frozen encoder, trained with class-aware sampling.

    Args (beyond ``Supervised``'s ``logit_adjust``, ``logit_adjust_tau`` and ``ema_decay``,
    which defaults to 0.0: evaluation sees the online network):
        sampler_beta: beta of the class-aware labeled sampler (0.999; 1 = exactly
            class-balanced). Read by the run's data stream (``sampler_beta`` attribute).
        base_run: the model_dir of the finished run whose online encoder is re-used
            (recorded; run.py loads it, the model itself reads no files).
    """

    unlabeled_views = ()

    def __init__(self, backbone, num_classes, sampler_beta=0.999, base_run=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if not 0.0 <= float(sampler_beta) <= 1.0:
            raise ValueError(f"sampler_beta must be in [0, 1]; got {sampler_beta}.")
        self.sampler_beta = float(sampler_beta)
        self.base_run = None if base_run is None else str(base_run)

    @classmethod
    def default_optimizer(cls, learning_rate=None, momentum=None, nesterov=None, weight_decay=None,
                          total_steps=None):
        """The reference SGD of the SSL learners (constant LR 0.03), not Supervised's schedule."""
        return super(Supervised, cls).default_optimizer(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
            weight_decay=weight_decay, total_steps=total_steps)

    def build_state(self, feature_dim):
        # Frozen encoder: its variables are hidden from the optimiser (and so from weight
        # decay); the layers stay trainable, so BatchNorm runs in training mode.
        for weight in self.online_network.backbone.weights:
            weight.trainable = False

    def forward_and_compute_losses(self, batch, step):
        features = tf.stop_gradient(self.online_network.features(batch["x_l"], training=True))
        logits = self.online_network.classifier(features)
        prior = self.labeled_prior() if self.logit_adjust else None
        loss_x = supervised_loss(logits, batch["y_l"], class_prior=prior, tau=self.logit_adjust_tau)
        loss_x = keras.ops.cast(loss_x, self.loss_dtype())
        return {"loss": loss_x, "loss_x": loss_x}, {}

    # ------------------------------------------------------------------ the encoder
    def load_encoder(self, checkpoint_path):
        """Loads the online encoder (weights and BatchNorm statistics) of a daso_tf training
        checkpoint (``tf.train.Checkpoint(model=learner, ...)``, any learner) into both
        networks' encoders; the classifiers are left as they are.

        Raises ValueError when the checkpoint does not hold every encoder variable.
        """
        if not self.built:
            raise ValueError("CRT must be built before load_encoder().")
        encoder = tf.train.Checkpoint(backbone=self.online_network.backbone)
        status = tf.train.Checkpoint(model=tf.train.Checkpoint(online_network=encoder)).read(checkpoint_path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as error:
            first = str(error).split(":", 1)[0]
            raise ValueError(f"checkpoint {checkpoint_path} does not hold this model's encoder ({first}); "
                             "it was written for another backbone") from None
        status.expect_partial()  # the rest of the checkpoint (classifier, EMA, optimiser) is not used
        self._copy_online_encoder_to_ema()

    def copy_encoder(self, trained):
        """Copies the online encoder of ``trained`` (a built daso_tf learner with the same
        backbone) into both networks' encoders."""
        source, target = trained.online_network.backbone.weights, self.online_network.backbone.weights
        if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source, target)):
            raise ValueError(f"{type(trained).__name__}'s encoder does not match this model's.")
        for weight, value in zip(target, source):
            weight.assign(value)
        self._copy_online_encoder_to_ema()

    def _copy_online_encoder_to_ema(self):
        for ema_weight, weight in zip(self.ema_network.backbone.weights, self.online_network.backbone.weights):
            ema_weight.assign(weight)

    def get_config(self):
        config = super().get_config()
        config.update({"sampler_beta": self.sampler_beta, "base_run": self.base_run})
        return config
