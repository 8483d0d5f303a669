"""FixMatch + DARP (the DASO reference's ``fixmatch.yaml`` with ``ALGORITHM.DARP.APPLY True``).

FixMatch's step with DARP between the prediction and the pseudo-label:
  p        = softmax(logits_w)                          (no gradient)
  p'       = DARP(p, u_index)                           (``daso_tf.algorithms.darp``)
  loss_u   = sum_i mask_i * CE(logits_s_i, argmax p'_i) / B_u,   mask = max p' >= 0.95
  loss     = loss_x + lambda_u * loss_u
DARP stores p for every unlabeled sample (by its dataset index, which the training
batches must carry: ``train_stream(..., with_unlabeled_indices=True)``) and, after a
warm-up of ``darp_warmup_ratio`` (0.4) of the run's steps, refines the pseudo-labels of the
whole unlabeled set every ``darp_period`` (10) steps towards a target count per class:
the true unlabeled counts when the unlabeled set follows the labeled distribution
(gamma_l == gamma_u, not reversed), otherwise an estimate (``darp_estimate``: a reference
estimate or the file a ``darp_estim`` run writes; ``daso_tf.data.unlabeled_estimates``).
The solve runs on the host (NumPy) inside the step, so the step is not XLA-compiled.

Hyper-parameters: ``ALGORITHM.DARP`` of the reference's ``defaults.py`` (WARMUP_RATIO 0.4,
PER_ITERS 10, ALPHA 2.0, NUM_DARP_ITERS 10) on top of FixMatch's (threshold 0.95, lambda_u 1).
"+ LA" (the paper's FixMatch + LA + DARP) is ``logit_adjust=True``.
"""

import keras
import numpy as np

from daso_tf.algorithms.darp import DARP
from daso_tf.algorithms.fixmatch import FixMatch
from daso_tf.data import unlabeled_estimates


@keras.saving.register_keras_serializable(package="daso_tf")
class FixMatchDARP(FixMatch):
    """FixMatch whose pseudo-labels DARP refines over the whole unlabeled set.

    Args (beyond ``FixMatch``'s):
        darp_warmup_ratio: fraction of ``total_steps`` before the first refinement (0.4).
        darp_period: steps between refinements (10).
        darp_alpha: DARP's per-class selection factor alpha (2.0).
        darp_iterations: iterations of DARP's dual solve (10).
        darp_estimate: where the target comes from: None = the true unlabeled class counts
            (``unlabeled_class_counts``); a reference estimate name or an estimate file
            (``daso_tf.data.unlabeled_estimates``), scaled to ``num_unlabeled`` samples.
        total_steps: the run's length (sets the warm-up).
        num_unlabeled: N_u, the size of the unlabeled set (data; the run fills it in).
        unlabeled_class_counts: the true unlabeled counts per class, or None where unknown
            (data; the run fills them in).

    Training batches: ``((x_l, y_l), (u_w, u_s, u_true, u_index))``.
    """

    NOT_HYPERPARAMETERS = FixMatch.NOT_HYPERPARAMETERS + ("num_unlabeled", "unlabeled_class_counts")
    needs_unlabeled_indices = True
    xla_compatible = False  # DARP solves on the host (tf.numpy_function) inside the train step

    def __init__(self, backbone, num_classes, darp_warmup_ratio=0.4, darp_period=10, darp_alpha=2.0,
                 darp_iterations=10, darp_estimate=None, total_steps=250_000, num_unlabeled=None,
                 unlabeled_class_counts=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if not 0.0 <= float(darp_warmup_ratio) <= 1.0:
            raise ValueError(f"darp_warmup_ratio must be in [0, 1]; got {darp_warmup_ratio}.")
        if num_unlabeled is None:
            raise ValueError("FixMatchDARP needs num_unlabeled, the size of the unlabeled set.")
        self.darp_warmup_ratio = float(darp_warmup_ratio)
        self.darp_period = int(darp_period)
        self.darp_alpha = float(darp_alpha)
        self.darp_iterations = int(darp_iterations)
        self.darp_estimate = darp_estimate
        self.total_steps = int(total_steps)
        self.num_unlabeled = int(num_unlabeled)
        self.unlabeled_class_counts = (None if unlabeled_class_counts is None
                                       else [int(c) for c in unlabeled_class_counts])
        self.darp = DARP(self.num_unlabeled, self.target_counts(), int(self.total_steps * self.darp_warmup_ratio),
                         period=self.darp_period, alpha=self.darp_alpha, iterations=self.darp_iterations,
                         name="darp")

    def target_counts(self):
        """DARP's target c [K]: the true unlabeled counts, or the estimate scaled to N_u."""
        if self.darp_estimate is None:
            if self.unlabeled_class_counts is None:
                raise ValueError("FixMatchDARP needs unlabeled_class_counts (the true counts) or a darp_estimate.")
            return np.asarray(self.unlabeled_class_counts, dtype="float64")
        estimate = unlabeled_estimates.load_estimate(self.darp_estimate)
        if estimate.size != self.num_classes:
            raise ValueError(f"darp_estimate {self.darp_estimate} holds {estimate.size} classes; the model has "
                             f"{self.num_classes}.")
        return unlabeled_estimates.target_counts(estimate, self.num_unlabeled)

    @classmethod
    def data_arguments(cls, config, lt_data):
        """The unlabeled set's size and true counts; with ``algorithm.darp_estimate`` unset and
        an unlabeled set that does not follow the labeled distribution, the reference
        estimate of the run's setting (as the reference's ``get_target_dist`` loads it)."""
        arguments = {"num_unlabeled": len(lt_data.unlabeled_labels),
                     "unlabeled_class_counts": lt_data.unlabeled_counts}
        if config.algorithm.darp_estimate is None and not unlabeled_estimates.unlabeled_matches_labeled(config.data):
            arguments["darp_estimate"] = unlabeled_estimates.reference_estimate_name(config.data)
        return arguments

    @classmethod
    def check_run_config(cls, config, stored=None):
        from daso_tf.config import ConfigError

        name = config.algorithm.name
        if config.runtime.jit_compile is True:  # auto stays off for this learner (xla_compatible)
            raise ConfigError(f"runtime.jit_compile=True: learner {name!r} solves DARP on the host inside the train "
                              "step, which XLA cannot compile; expected false")
        from daso_tf.data.sources import train_images_per_class

        data, estimate = config.data, config.algorithm.darp_estimate
        per_class, extra_unlabeled = train_images_per_class(data.dataset, data.source, data.data_dir)
        if estimate is None:
            if unlabeled_estimates.unlabeled_matches_labeled(data):
                if extra_unlabeled:
                    raise ConfigError(f"algorithm.darp_estimate unset: learner {name!r} would use the true "
                                      "unlabeled class counts, but the unlabeled images of this data are not labeled; "
                                      "set algorithm.darp_estimate (a darp_estim run's darp_estimate.json)")
                return  # the true unlabeled counts
            estimate = unlabeled_estimates.reference_estimate_name(data)
            if estimate not in unlabeled_estimates.REFERENCE_ESTIMATES:
                raise ConfigError(
                    f"algorithm.darp_estimate unset: learner {name!r} needs an estimate of the unlabeled class "
                    f"distribution when the unlabeled set does not follow the labeled one (data.imbalance_labeled="
                    f"{data.imbalance_labeled}, data.imbalance_unlabeled={data.imbalance_unlabeled}, "
                    f"data.reverse_unlabeled={data.reverse_unlabeled}), and the reference has none for {estimate}; "
                    "set algorithm.darp_estimate to the darp_estimate.json an algorithm.name=darp_estim run writes")
        try:
            values = unlabeled_estimates.load_estimate(estimate)
        except ValueError as error:
            raise ConfigError(f"algorithm.darp_estimate={estimate}: {error}") from None
        if estimate in unlabeled_estimates.REFERENCE_ESTIMATES:
            setting = unlabeled_estimates.reference_estimate_name(config.data)
            if estimate != setting:
                raise ConfigError(f"algorithm.darp_estimate={estimate}: this reference estimate is for another "
                                  f"data setting than the run's ({setting})")
        classes = len(per_class)
        if values.size != classes:
            raise ConfigError(f"algorithm.darp_estimate={estimate}: holds {values.size} classes; "
                              f"data.dataset={config.data.dataset} has {classes}")

    def compile(self, optimizer=None, **kwargs):
        if kwargs.get("jit_compile") is True:
            raise ValueError("FixMatchDARP cannot be XLA-compiled (jit_compile=True): DARP's solve runs on the host "
                             "inside the train step.")
        super().compile(optimizer=optimizer, **kwargs)

    def compute_losses(self, batch, parts, step):
        return super().compute_losses(batch, dict(parts, u_index=batch["u_index"]), step)

    def refine_pseudo_labels(self, linear_probs, parts, step):
        return self.darp(linear_probs, parts["u_index"]), {}

    def get_config(self):
        config = super().get_config()
        config.update({
            "darp_warmup_ratio": self.darp_warmup_ratio, "darp_period": self.darp_period,
            "darp_alpha": self.darp_alpha, "darp_iterations": self.darp_iterations,
            "darp_estimate": self.darp_estimate, "total_steps": self.total_steps,
            "num_unlabeled": self.num_unlabeled, "unlabeled_class_counts": self.unlabeled_class_counts,
        })
        return config
