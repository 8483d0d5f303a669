"""Supervised baseline: the reference LR schedule, the labeled-only loss, evaluation weights."""

import numpy as np
import pytest
import tensorflow as tf

import daso_tf
from daso_tf.algorithms.lr_schedules import WarmupMultiStepSchedule
from daso_tf.algorithms.supervised import Supervised
from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def test_reference_schedule_hand_values():
    optimizer = Supervised.default_optimizer()
    assert isinstance(optimizer, daso_tf.CoupledL2SGD) and optimizer.l2 == 5e-4 and optimizer.nesterov
    schedule = WarmupMultiStepSchedule(0.1, 6250, (199999, 225000), 0.01)
    expected = {0: 0.0, 625: 0.01, 3125: 0.05, 6250: 0.1, 199998: 0.1, 199999: 1e-3,
                224999: 1e-3, 225000: 1e-5, 249999: 1e-5}
    for step, lr in expected.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5, abs=1e-12), step
        assert schedule.value_at(step) == pytest.approx(lr, rel=1e-9, abs=1e-15), step
    assert WarmupMultiStepSchedule.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_one_step_is_labeled_cross_entropy_with_optional_la_and_evaluates_the_trained_weights():
    (x_l, y_l), unlabeled = synthetic_batches(1)[0]
    for logit_adjust in (False, True):
        model = tiny_daso(algorithm="supervised", logit_adjust=logit_adjust)
        model.compile(optimizer=daso_tf.reference_sgd())
        logits = model.online_network(x_l, training=True).numpy()
        if logit_adjust:
            prior = np.array(model.labeled_class_counts, "float64")
            logits = logits + np.log(prior / prior.sum())
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = -log_probs[np.arange(len(y_l)), y_l].mean()
        logs, _ = tf.function(model.train_step_with_outputs)(((x_l, y_l), unlabeled))
        assert float(logs["loss_x"]) == pytest.approx(expected, rel=1e-4)
        # ema_decay 0: the evaluated network is exactly the trained one
        for ema, online in zip(model.ema_network.weights, model.online_network.weights):
            np.testing.assert_array_equal(ema.numpy(), online.numpy())


def test_fit_from_labeled_only_batches():
    model = tiny_daso(algorithm="supervised")
    model.compile()
    assert isinstance(model.optimizer._learning_rate, WarmupMultiStepSchedule)
    batches = synthetic_batches(2)
    labeled = tf.data.Dataset.from_tensor_slices(
        (np.stack([b[0][0] for b in batches]), np.stack([b[0][1] for b in batches])))
    history = model.fit(labeled, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    history = model.fit(as_dataset(batches), epochs=1, verbose=0)  # standard layout works too
    assert np.isfinite(history.history["loss"]).all() and int(model.step.numpy()) == 4
