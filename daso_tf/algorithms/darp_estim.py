"""DARP_ESTIM: estimate the unlabeled class distribution for DARP (the DASO reference's
``lib/algorithm/darp_estim.py``), by black-box shift estimation (Lipton et al., 2018).

A classifier is trained on the labeled set only (cross-entropy, the reference SGD, no EMA:
``ema_decay`` 0 so the evaluated network is the trained one). A hold-out of
``holdout_per_class`` (10) images per class is set aside: the first 10 of every class of
the labeled set, or of the validation set when the labeled tail class has no more than 10
(``holdout_split``). At every evaluation:
  C[:, j]  = sum of softmax(f(x)) over the hold-out images x of class j, each column
             normalised to sum 1 (a soft confusion matrix)
  q~       = sum of softmax(f(x)) over the whole unlabeled set
  q^       = C^-1 q~
and q^ is accepted when it has no negative entry and cond(C) < ``max_condition_number``
(100). The estimate is the mean of the accepted q^ (in unlabeled-sample counts), kept in
the model's state (``estimate_sum``, ``estimate_count``; checkpointed). A ``darp_estim``
run writes it to ``<model_dir>/darp_estimate.json``, the file ``fixmatch_darp`` reads
(``algorithm.darp_estimate``); ``daso_tf.training.distribution_estimation`` drives the
dataset-wide passes (also usable as a Keras callback).
"""

import keras
import numpy as np

from daso_tf.algorithms.supervised import Supervised


def holdout_split(labels, per_class, num_classes):
    """(hold-out, rest) index arrays: the first ``per_class`` indices of every class (in
    array order) and all the others."""
    labels = np.asarray(labels)
    holdout = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(num_classes)])
    rest = np.setdiff1d(np.arange(len(labels)), holdout)
    return np.sort(holdout), rest


def shift_estimate(holdout_probs, holdout_labels, unlabeled_probs):
    """(q^ [K], cond(C)) from softmax outputs on the hold-out ([n, K], labels [n]) and on the
    unlabeled set ([N, K]) (module docstring). Classes missing from the hold-out make C
    singular: cond is then inf and q^ NaN."""
    holdout_probs = np.asarray(holdout_probs, dtype="float64")
    num_classes = holdout_probs.shape[1]
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion.T, np.asarray(holdout_labels), holdout_probs)  # column j: sum over class j
    with np.errstate(invalid="ignore", divide="ignore"):
        confusion /= confusion.sum(axis=0, keepdims=True)
    predicted = np.asarray(unlabeled_probs, dtype="float64").sum(axis=0)
    if not np.isfinite(confusion).all():
        return np.full(num_classes, np.nan), float("inf")
    condition = float(np.linalg.cond(confusion))
    try:
        return np.linalg.inv(confusion) @ predicted, condition
    except np.linalg.LinAlgError:
        return np.full(num_classes, np.nan), float("inf")


@keras.saving.register_keras_serializable(package="daso_tf")
class DARPEstim(Supervised):
    """A labeled-only classifier that accumulates estimates of the unlabeled class distribution.

    Args (beyond ``Supervised``'s; ``ema_decay`` 0):
        holdout_per_class: hold-out images per class for the confusion matrix (10).
        max_condition_number: estimates with cond(C) at or above this are rejected (100).

    Its optimiser is the reference SGD (constant 0.03), not Supervised's schedule.
    """

    def __init__(self, backbone, num_classes, holdout_per_class=10, max_condition_number=100.0, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if int(holdout_per_class) < 1 or float(max_condition_number) <= 0:
            raise ValueError(f"holdout_per_class must be >= 1 and max_condition_number > 0; got "
                             f"{holdout_per_class}, {max_condition_number}.")
        self.holdout_per_class = int(holdout_per_class)
        self.max_condition_number = float(max_condition_number)

    @classmethod
    def default_optimizer(cls, learning_rate=None, momentum=None, nesterov=None, weight_decay=None,
                          total_steps=None):
        """The reference SGD (constant learning rate 0.03): DARP_ESTIM runs with the defaults."""
        return super(Supervised, cls).default_optimizer(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
            total_steps=total_steps)

    def build_state(self, feature_dim):
        super().build_state(feature_dim)
        state = dict(trainable=False, aggregation="only_first_replica")
        self.estimate_sum = self.add_weight(name="estimate_sum", shape=(self.num_classes,), dtype="float64",
                                            initializer="zeros", **state)
        self.estimate_count = self.add_weight(name="estimate_count", shape=(), dtype="int64",
                                              initializer="zeros", **state)

    def add_estimate(self, holdout_probs, holdout_labels, unlabeled_probs):
        """Estimates q^ from the given softmax outputs and keeps it if accepted; returns
        ``{"estimate", "condition_number", "accepted"}``."""
        estimate, condition = shift_estimate(holdout_probs, holdout_labels, unlabeled_probs)
        accepted = bool(np.isfinite(estimate).all() and (estimate >= 0).all()
                        and condition < self.max_condition_number)
        if accepted:
            self.estimate_sum.assign(np.asarray(self.estimate_sum.numpy()) + estimate)
            self.estimate_count.assign(int(self.estimate_count.numpy()) + 1)
        return {"estimate": estimate, "condition_number": condition, "accepted": accepted}

    def estimate(self):
        """The mean of the accepted estimates (float64 [K], unlabeled-sample counts), or None."""
        count = int(self.estimate_count.numpy())
        return np.asarray(self.estimate_sum.numpy()) / count if count else None

    def get_config(self):
        config = super().get_config()
        config.update({"holdout_per_class": self.holdout_per_class,
                       "max_condition_number": self.max_condition_number})
        return config
