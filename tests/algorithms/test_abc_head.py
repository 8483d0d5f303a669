"""ABC's masks and losses against hand-computed cases, with and without DASO blending."""

import numpy as np
import pytest

from daso_tf.algorithms.abc_head import (abc_balance_probabilities, abc_losses,
                                         abc_unlabeled_keep_probabilities)

LOG3 = np.log(3.0)


def case(**overrides):
    arguments = dict(
        labeled_logits=np.zeros((2, 3)), labels=np.array([0, 2]),
        weak_logits=np.log(np.array([[0.96, 0.02, 0.02], [0.1, 0.1, 0.8]])),
        strong_logits=np.zeros((2, 3)), balance=abc_balance_probabilities([4, 2, 1]),
        step=125000, threshold=0.95, labeled_uniform=np.array([0.3, 0.9]),
        unlabeled_uniform=np.array([0.6, 0.0]))
    arguments.update(overrides)
    return abc_losses(**arguments)


def test_balance_and_gradual_keep_probabilities():
    np.testing.assert_allclose(abc_balance_probabilities([4, 2, 1]), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(abc_balance_probabilities([4, 1, 2]), [0.5, 1.0, 1.0])  # clipped
    balance = np.array([0.25, 0.5, 1.0])
    np.testing.assert_allclose(abc_unlabeled_keep_probabilities(balance, 0), [1, 1, 1])
    np.testing.assert_allclose(abc_unlabeled_keep_probabilities(balance, 499), [1, 1, 1])
    # t // 500 = 250 of 500 epochs: 1 - 0.5 * (1 - balance)
    np.testing.assert_allclose(abc_unlabeled_keep_probabilities(balance, 125000), [0.625, 0.75, 1.0])
    np.testing.assert_allclose(abc_unlabeled_keep_probabilities(balance, 250000), balance)


def test_masks_and_losses_hand_case():
    loss, details = case()
    # labeled: 0.3 < 0.25 fails (class 0), 0.9 < 1.0 keeps (class 2); CE of zero logits = log 3
    np.testing.assert_array_equal(details["labeled_mask"], [0.0, 1.0])
    assert float(details["loss_abc_x"]) == pytest.approx(LOG3 / 2, rel=1e-5)
    # unlabeled: row 0 confident (0.96), class 0 kept with prob 0.625 (0.6 < 0.625); row 1 not
    # confident. Soft CE of p against zero logits = log 3.
    np.testing.assert_array_equal(details["unlabeled_mask"], [1.0, 0.0])
    assert float(details["loss_abc_u"]) == pytest.approx(LOG3 / 2, rel=1e-5)
    assert float(loss) == pytest.approx(LOG3, rel=1e-5)
    _, dropped = case(unlabeled_uniform=np.array([0.7, 0.0]))  # 0.7 >= 0.625: dropped
    np.testing.assert_array_equal(dropped["unlabeled_mask"], [0.0, 0.0])
    assert float(dropped["loss_abc_u"]) == 0.0
    _, early = case(step=0, unlabeled_uniform=np.array([0.99, 0.0]))  # keep prob 1 at t < 500
    np.testing.assert_array_equal(early["unlabeled_mask"], [1.0, 0.0])


def test_daso_blends_the_abc_target_before_masking():
    # v = [0.5, 1, 1] looked up at the ABC argmax; q = [0, 0, 1] for both rows.
    # row 0: 0.5 * [0.96, .02, .02] + 0.5 * [0, 0, 1] = [0.48, 0.01, 0.51] -> not confident
    # row 1: argmax 2, v = 1 -> target q, confidence 1, class 2 kept (keep prob 1)
    q = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss, details = case(semantic_probs=q, class_weights=np.array([0.5, 1.0, 1.0]))
    np.testing.assert_allclose(details["abc_probs"], [[0.48, 0.01, 0.51], [0.0, 0.0, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(details["unlabeled_mask"], [0.0, 1.0])
    np.testing.assert_array_equal(details["abc_pseudo_labels"], [2, 2])
    assert float(details["loss_abc_u"]) == pytest.approx(LOG3 / 2, rel=1e-5)
    assert float(loss) == pytest.approx(LOG3, rel=1e-5)


def test_float64_is_kept():
    loss, _ = case(labeled_logits=np.zeros((2, 3), "float64"))
    assert loss.dtype == "float64"


def test_daso_with_abc_step_matches_the_composed_reference_math():
    import keras
    import tensorflow as tf

    from daso_tf.algorithms.abc_head import ABC_HEAD
    from daso_tf.pseudo_labels import semantic_probs
    from tests.helpers import synthetic_batches, tiny_daso

    model = tiny_daso(abc=True, seed=4, warmup_steps=0, queue_size=8, histogram_period=1)
    model.compile()
    model.optimizer.build(model.trainable_variables)
    initial = [w.numpy() for w in model.online_network.weights]
    batch = synthetic_batches(1)[0]
    logs, outputs = tf.function(model.train_step_with_outputs)(batch)
    (x_l, y_l), (u_w, u_s, _) = batch
    check = tiny_daso(abc=True, seed=4)
    for weight, value in zip(check.online_network.weights, initial):
        weight.assign(value)
    features = check.online_network.features(np.concatenate([x_l, u_w, u_s]), training=True)
    b, bu = len(x_l), len(u_w)
    logits = check.online_network.head(ABC_HEAD)(features)
    q = semantic_probs(features[b:b + bu], model.queue.prototypes, 0.05)
    seed = keras.random.SeedGenerator(4)
    expected, _ = abc_losses(
        logits[:b], y_l, logits[b:b + bu], logits[b + bu:], abc_balance_probabilities(model.labeled_class_counts),
        0, 0.5, keras.random.uniform((b,), seed=seed), keras.random.uniform((bu,), seed=seed),
        semantic_probs=q, class_weights=np.ones(model.num_classes))  # empty histogram: v = 1
    assert float(logs["loss_abc"]) == pytest.approx(float(expected), rel=1e-4)
    total = sum(float(logs[k]) for k in ("loss_x", "loss_u", "loss_align", "loss_abc"))
    assert float(logs["loss"]) == pytest.approx(total, rel=1e-5)
    # evaluation uses the EMA network's ABC head; the histogram still counts the linear head's p'
    features = model.ema_network.features(x_l)
    np.testing.assert_allclose(model(x_l), model.ema_network.head(ABC_HEAD)(features), rtol=1e-6)
    np.testing.assert_array_equal(model.histogram.counts.numpy(),
                                  np.bincount(outputs["pseudo_labels"].numpy(), minlength=model.num_classes))


def test_daso_abc_flag_off_has_no_abc_head_and_records_abc_and_seed():
    from tests.helpers import tiny_daso

    plain = tiny_daso(seed=3)  # run.py passes the run's seed to every learner that takes one
    assert plain.online_network.auxiliary_heads == () and plain.ema_network.output_head == "classifier"
    assert plain.get_config()["abc"] is False and plain.get_config()["seed"] == 3
    assert not hasattr(plain, "seed_generator")
    restored = type(plain).from_config(tiny_daso(abc=True, seed=2).get_config())
    assert restored.abc and restored.seed == 2 and restored.ema_network.output_head == "abc_classifier"
