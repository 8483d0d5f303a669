"""DARP_ESTIM (daso_tf.algorithms.darp_estim) and its driver
(daso_tf.training.distribution_estimation): the hold-out, the shift estimate by hand, the
acceptance rule, the estimate file fixmatch_darp reads."""

import json

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.darp_estim import holdout_split, shift_estimate
from daso_tf.data import LongTailedData, unlabeled_estimates
from daso_tf.training import distribution_estimation
from daso_tf.training.distribution_estimation import DistributionEstimation
from tests.helpers import tiny_daso


def test_holdout_is_the_first_images_of_every_class():
    labels = np.array([2, 0, 0, 1, 0, 2, 1, 0])
    holdout, rest = holdout_split(labels, 2, 3)
    np.testing.assert_array_equal(holdout, [0, 1, 2, 3, 5, 6])  # class 0: 1, 2; class 1: 3, 6; class 2: 0, 5
    np.testing.assert_array_equal(rest, [4, 7])


def test_shift_estimate_by_hand():
    # hold-out: class 0 predicted [.8, .2] and [.6, .4]; class 1 predicted [.3, .7]
    # C columns: [1.4, .6] / 2 = [.7, .3] and [.3, .7]; det = .49 - .09 = .4
    # unlabeled mass q~ = [.9+.5+.2, .1+.5+.8] = [1.6, 1.4]; q^ = C^-1 q~ = [.7*1.6 - .3*1.4,
    # -.3*1.6 + .7*1.4] / .4 = [1.75, 1.25]
    estimate, condition = shift_estimate([[.8, .2], [.6, .4], [.3, .7]], [0, 0, 1],
                                         [[.9, .1], [.5, .5], [.2, .8]])
    np.testing.assert_allclose(estimate, [1.75, 1.25], rtol=1e-12)
    # C is symmetric with eigenvalues 1 and .4: cond = 2.5
    assert condition == pytest.approx(2.5)
    nan_estimate, infinite = shift_estimate([[.8, .2]], [0], [[.5, .5]])  # no class-1 hold-out
    assert np.isnan(nan_estimate).all() and infinite == float("inf")


def test_estimates_are_accepted_only_if_non_negative_and_well_conditioned():
    model = tiny_daso(num_classes=2, algorithm="darp_estim", labeled_class_counts=[3, 1], max_condition_number=3)
    holdout, labels = [[.8, .2], [.6, .4], [.3, .7]], [0, 0, 1]
    assert model.add_estimate(holdout, labels, [[.9, .1], [.5, .5], [.2, .8]])["accepted"]  # cond 2.5 < 3
    # q~ = [.2, 1.8] -> q^ = [.7*.2 - .3*1.8, ...] / .4 < 0 in class 0: rejected
    rejected = model.add_estimate(holdout, labels, [[.1, .9], [.1, .9]])
    assert not rejected["accepted"] and rejected["estimate"][0] < 0
    assert not tiny_daso(num_classes=2, algorithm="darp_estim", labeled_class_counts=[3, 1],
                         max_condition_number=2.4).add_estimate(holdout, labels, [[.9, .1]])["accepted"]
    assert model.add_estimate(holdout, labels, [[.5, .5], [.3, .7]])["accepted"]  # q^ = [.5, 1.5]
    np.testing.assert_allclose(model.estimate(), [(1.75 + .5) / 2, (1.25 + 1.5) / 2])
    assert int(model.estimate_count.numpy()) == 2
    assert model.ema_decay == 0.0
    assert type(model).default_optimizer().get_config()["learning_rate"] == 0.03  # not Supervised's schedule


def two_class_data(num_labeled):
    """Images whose first pixel says the class; labeled classes of num_labeled and 2 images."""
    labels = np.array([0] * num_labeled + [1] * 2)
    valid_labels = np.array([0, 0, 1, 1])
    unlabeled_labels = np.array([0, 1, 1, 1, 0])

    def images(classes):
        return np.broadcast_to(np.asarray(classes, np.uint8)[:, None, None, None] * 100, (len(classes), 16, 16, 3)).copy()

    return LongTailedData(images(labels), labels, images(unlabeled_labels), unlabeled_labels,
                          images(valid_labels), valid_labels, images(valid_labels), valid_labels, ["a", "b"],
                          [num_labeled, 2], [2, 3], [2, 2])


def test_estimation_writes_the_file_fixmatch_darp_reads(tmp_path, monkeypatch):
    model = tiny_daso(num_classes=2, algorithm="darp_estim", labeled_class_counts=[3, 1], holdout_per_class=1)
    # a classifier that is right with confidence .8 (the first pixel tells the class)
    monkeypatch.setattr(distribution_estimation, "predict_probabilities",
                        lambda network, images, **_: np.where(images[:, :1, 0, 0] > 0, [[.2, .8]], [[.8, .2]]))
    output = tmp_path / "darp_estimate.json"
    estimation = DistributionEstimation(model, two_class_data(3), interval=2, output_path=str(output),
                                        log=lambda *_: None)
    assert estimation.source == "labeled"  # the tail class has 2 > 1 images
    assert estimation.training_data().labeled_labels.tolist() == [0, 0, 1]  # the first of each class held out
    # C = [[.8, .2], [.2, .8]]; q~ = 2 * [.8, .2] + 3 * [.2, .8] = [2.2, 2.8]; q^ = C^-1 q~ = [2, 3]
    training = estimation.training_data()
    batches = tf.data.Dataset.from_tensor_slices((training.labeled_images, training.labeled_labels)).repeat().batch(2)
    model.compile()
    model.fit(batches, steps_per_epoch=1, epochs=2, callbacks=[estimation], verbose=0)  # estimates at step 2
    assert int(model.estimate_count.numpy()) == 1
    written = json.loads(output.read_text())
    np.testing.assert_allclose(written["estimate"], [2.0, 3.0], rtol=1e-9)
    assert written["accepted_estimates"] == 1 and written["holdout"] == {"source": "labeled", "per_class": 1}
    np.testing.assert_allclose(unlabeled_estimates.load_estimate(str(output)), [2.0, 3.0], rtol=1e-9)
    np.testing.assert_allclose(unlabeled_estimates.target_counts([2.0, 3.0], 10), [4.0, 6.0])
    # the reference takes the hold-out from the validation set when the tail class is too small
    small_tail = DistributionEstimation(tiny_daso(num_classes=2, algorithm="darp_estim", labeled_class_counts=[3, 1],
                                                  holdout_per_class=2),
                                        two_class_data(3), interval=2, log=lambda *_: None)
    assert small_tail.source == "valid" and small_tail.holdout_labels.tolist() == [0, 0, 1, 1]
    assert small_tail.training_data().labeled_labels.tolist() == [0, 0, 0, 1, 1]  # unchanged
