"""Drives DARP_ESTIM's estimates (``daso_tf.algorithms.darp_estim``) during training.

``DistributionEstimation`` carves the hold-out out of the data (the first
``holdout_per_class`` images of every labeled class, or of the validation set when the
labeled tail class has no more than that many) and, as a Keras callback, estimates the
unlabeled class distribution at the end of every epoch whose step is a multiple of
``interval`` (and at ``total_steps``): softmax outputs of the trained network on the
hold-out and the whole unlabeled set -> ``DARPEstim.add_estimate``. It writes the running
mean of the accepted estimates to ``output_path`` (JSON, atomically), the file
``fixmatch_darp``'s ``algorithm.darp_estimate`` reads. run.py adds it to a ``darp_estim``
run (``interval`` = trainer.eval_interval, ``output_path`` = <model_dir>/darp_estimate.json)
and trains on ``training_data()``; a Keras user does the same:

    estimation = DistributionEstimation(model, lt_data, interval=500, output_path="estimate.json")
    model.fit(train_stream(estimation.training_data(), ...), steps_per_epoch=500, epochs=...,
              callbacks=[estimation])
"""

import dataclasses

import keras
import numpy as np

from daso_tf.training.dataset_inference import predict_probabilities
from daso_tf.io_utils import write_json

ESTIMATE_FILE = "darp_estimate.json"


class DistributionEstimation(keras.callbacks.Callback):
    """Black-box shift estimates of the unlabeled class distribution for a ``DARPEstim``.

    Args:
        model: the (built) ``DARPEstim`` learner.
        lt_data: the run's ``LongTailedData``.
        interval: estimate when the model's step is a multiple of this (and at ``total_steps``).
        output_path: where the running estimate is written (None: nowhere; the model keeps it).
        total_steps: the run's last step, if it is not a multiple of ``interval``.
        batch_size, output_size: of the inference passes.
        write: whether this process writes (multi-worker: the chief only).
        log: where each estimate is reported.
    """

    def __init__(self, model, lt_data, *, interval, output_path=None, total_steps=None, batch_size=256,
                 output_size=32, write=True, log=print):
        super().__init__()
        from daso_tf.algorithms.darp_estim import holdout_split

        self.learner, self.lt_data = model, lt_data
        self.interval, self.total_steps = int(interval), total_steps
        self.output_path, self.write, self.log = output_path, write, log
        self.batch_size, self.output_size = int(batch_size), int(output_size)
        per_class, num_classes = model.holdout_per_class, model.num_classes
        # The reference carves the hold-out from the labeled set unless its tail class has
        # no more than per_class images; then from the validation set.
        self.source = "labeled" if min(lt_data.labeled_counts) > per_class else "valid"
        labels = lt_data.labeled_labels if self.source == "labeled" else lt_data.valid_labels
        images = lt_data.labeled_images if self.source == "labeled" else lt_data.valid_images
        holdout, self._rest = holdout_split(labels, per_class, num_classes)
        if len(holdout) < num_classes:
            raise ValueError(f"DARP_ESTIM's hold-out from the {self.source} set has {len(holdout)} images; it "
                             f"needs at least one per class ({num_classes}).")
        self.holdout_images, self.holdout_labels = np.asarray(images)[holdout], np.asarray(labels)[holdout]

    @staticmethod
    def drives(model):
        """Whether ``model`` estimates the unlabeled class distribution (DARP_ESTIM)."""
        from daso_tf.algorithms.darp_estim import DARPEstim

        return isinstance(model, DARPEstim)

    def training_data(self):
        """``lt_data`` without the hold-out in its labeled set (unchanged when the hold-out
        comes from the validation set)."""
        if self.source != "labeled":
            return self.lt_data
        return dataclasses.replace(self.lt_data, labeled_images=np.asarray(self.lt_data.labeled_images)[self._rest],
                                   labeled_labels=np.asarray(self.lt_data.labeled_labels)[self._rest])

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.learner.step.numpy())
        if step % self.interval == 0 or step == self.total_steps:
            self.estimate(step)

    def estimate(self, step):
        """One estimate now; returns ``DARPEstim.add_estimate``'s record."""
        def probs(images):
            return predict_probabilities(self.learner, images, batch_size=self.batch_size,
                                         output_size=self.output_size)

        record = self.learner.add_estimate(probs(self.holdout_images), self.holdout_labels,
                                           probs(self.lt_data.unlabeled_images))
        verdict = "accepted" if record["accepted"] else "rejected"
        self.log(f"DARP estimate at step {step}: {verdict} (cond {record['condition_number']:.1f}) "
                 f"{np.array2string(record['estimate'], precision=1, max_line_width=200)}")
        mean = self.learner.estimate()
        if mean is not None and self.write and self.output_path:
            write_json(self.output_path, {
                "estimate": mean.tolist(), "accepted_estimates": int(self.learner.estimate_count.numpy()),
                "step": int(step), "num_unlabeled": int(len(self.lt_data.unlabeled_labels)),
                "holdout": {"source": self.source, "per_class": self.learner.holdout_per_class},
                "max_condition_number": self.learner.max_condition_number})
        return record
