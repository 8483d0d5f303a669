"""ACR: hand-computed adjustments, tau1 choice, OR-masks and distribution estimate; a NumPy
re-implementation of the reference's step (losses, targets, u_hat, D, tau1 over adaptation
periods); its EMA and optimiser variants; evaluation and export on head 2 (fc1)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import daso_tf
from daso_tf.algorithms.acr import (BALANCED_HEAD, adaptive_tau1, distribution_estimate, last_write_scatter,
                                    logit_adjustment, symmetric_kl)
from daso_tf.algorithms.lr_schedules import CosineSchedule
from daso_tf.optimizers import CoupledL2SGD
from tests.helpers import (TINY_SHAPE, class_images, dense_backbone, numpy_cross_entropy, numpy_logits,
                           numpy_softmax, tiny_daso)

NORMALIZATION = ((0.5,) * 3, (0.25,) * 3)


def test_logit_adjustment_symmetric_kl_and_tau1_by_hand():
    np.testing.assert_allclose(logit_adjustment(np.array([0.5, 0.3, 0.2]), 2.0),
                               [-1.3862943611, -2.4079456086, -3.2188758248], rtol=1e-9)
    # 0.5 KL((.5,.5) || (.25,.75)) + 0.5 KL((.25,.75) || (.5,.5))
    assert float(symmetric_kl(np.array([0.5, 0.5]), np.array([0.25, 0.75]))) == pytest.approx(0.13732653608, rel=1e-9)
    assert float(symmetric_kl(np.array([0.2, 0.8]), np.array([0.2, 0.8]))) == 0.0
    # tau1 = 2 * e^Dcon / (e^Dcon + e^Duni + e^Drev), D divided by the period (500)
    assert float(adaptive_tau1(np.zeros(3), 500, 2.0)) == pytest.approx(2 / 3)  # the first update: D = 0
    assert float(adaptive_tau1(np.array([500 * math.log(2), 0, 0]), 500, 2.0)) == pytest.approx(1.0)  # 2 * 2/4
    assert float(adaptive_tau1(np.array([0, 500 * math.log(3), 0]), 500, 2.0)) == pytest.approx(0.4)  # 2 * 1/5
    assert float(adaptive_tau1(np.array([0, 0, 500 * math.log(8)]), 500, 2.0)) == pytest.approx(0.2)  # 2 * 1/10


def test_distribution_estimate_is_the_last_write_per_class_not_a_count():
    # head-2 labels [2, 0, 2, 1], confident [1, 1, 0, 1], sample 3 is a labeled image (-2)
    np.testing.assert_array_equal(last_write_scatter(np.array([2, 0, 2, 1]), np.array([5., 6., 7., 8.]), 4),
                                  [6., 8., 7., 0.])
    v = distribution_estimate(np.array([2, 0, 2, 1]), np.array([1., 1., 0., 1.]), np.array([1., 1., 1., 0.]), 3)
    np.testing.assert_array_equal(v, [1., 0., 0.])  # class 2: its LAST sample was not confident
    # (a bincount of the confident, unlabeled samples would give [1, 0, 1])


def _acr(num_classes, counts, **kwargs):
    keras.utils.set_random_seed(0)  # the heads' initial weights: the same data in any test order
    model = daso_tf.ACR(dense_backbone(), num_classes, normalization=NORMALIZATION,
                        labeled_class_counts=counts, **kwargs)
    model.build((None,) + TINY_SHAPE)
    model.compile(optimizer=daso_tf.reference_sgd(learning_rate=1e-3))
    return model


def test_masks_are_ors_of_two_confidences():
    # K=2, prior (0.8, 0.2), tau1 = tau12 = 2: A = log((0.64, 0.04)) = (-0.4463, -3.2189).
    model = _acr(2, [8, 2], threshold=0.9)
    weak = np.array([[3.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    weak_balanced = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    targets = model.pseudo_labels(tf.constant(weak, tf.float32), tf.constant(weak_balanced, tf.float32),
                                  model.labeled_prior())
    targets = {k: np.asarray(v) for k, v in targets.items()}
    # a: softmax(z) = .953 passes, softmax(z - A) = .557 does not -> kept, label 0
    # b: softmax(z) = .5, softmax(z - A) = .941 (class 1) -> kept, label 1
    # c: .731 and .855 (class 1) -> masked out
    np.testing.assert_array_equal(targets["pseudo_labels"], [0, 1, 1])
    np.testing.assert_array_equal(targets["mask"], [True, True, False])
    # head 2 (targets from z - A(tau12)): a: .5 / .557 -> out; b: .5 / .941 -> in; c: softmax(b) = .953 -> in
    np.testing.assert_array_equal(targets["balanced_targets"], [0, 1, 1])
    np.testing.assert_array_equal(targets["balanced_mask"], [False, True, True])
    np.testing.assert_array_equal(targets["balanced_pseudo_labels"], [0, 0, 1])
    np.testing.assert_array_equal(targets["balanced_confident"], [0, 0, 1])


def _numpy_symmetric_kl(p, q):
    return 0.5 * np.sum(p * np.log(p / q)) + 0.5 * np.sum(q * np.log(q / p))


def test_steps_follow_a_numpy_reimplementation_of_the_reference():
    counts = [6, 3, 1]
    threshold, rho, period, tau_max = 0.4, 0.5, 2, 2.0
    model = _acr(3, counts, threshold=threshold, tau1=tau_max, distribution_momentum=rho,
                 adaptation_period=period, estimation_start_step=1)
    prior = np.array(counts, float) / sum(counts)
    anchors = [prior, np.full(3, 1 / 3), prior[::-1]]
    rng = np.random.default_rng(0)
    tau1, estimate, distances = tau_max, np.full(3, 1 / 3), np.zeros(3)
    tau1_seen = []
    for step in range(5):
        y_l = rng.integers(0, 3, 4).astype(np.int32)
        u_true = rng.integers(0, 3, 6).astype(np.int32)
        u_true[[1, 4]] = -2  # labeled images inside the unlabeled set (ACR's split)
        x_l, u_w = class_images(y_l, rng, num_classes=3), class_images(np.maximum(u_true, 0), rng, num_classes=3)
        u_s1, u_s2 = (np.clip(u_w + rng.integers(-30, 30, u_w.shape), 0, 255).astype(np.uint8) for _ in range(2))
        net = model.online_network
        z = {k: numpy_logits(net, v) for k, v in (("l", x_l), ("w", u_w), ("s1", u_s1), ("s2", u_s2))}
        b = {k: numpy_logits(net, v, BALANCED_HEAD) for k, v in (("l", x_l), ("w", u_w), ("s1", u_s1), ("s2", u_s2))}

        # --- the reference's step, in NumPy
        if step % period == 0:
            if step >= 1:
                e = np.exp(distances / period)
                tau1 = tau_max * e[0] / e.sum()
            distances = np.zeros(3)
        tau1_seen.append(tau1)

        def adjustment(tau):
            return np.log(prior ** tau + 1e-12)

        q1, q12 = numpy_softmax(z["w"] - adjustment(tau1)), numpy_softmax(z["w"] - adjustment(2.0))
        qb, qt = numpy_softmax(b["w"]), numpy_softmax(z["w"])
        mask1 = (q1.max(-1) >= threshold) | (qt.max(-1) >= threshold)
        mask2 = (qb.max(-1) >= threshold) | (q12.max(-1) >= threshold)
        y1, y12, yb = q1.argmax(-1), q12.argmax(-1), qb.argmax(-1)
        loss_x = numpy_cross_entropy(z["l"], y_l).mean()
        loss_xb = numpy_cross_entropy(b["l"] + adjustment(2.0), y_l).mean()
        loss_u = np.concatenate([numpy_cross_entropy(z[s], y1) * mask1 for s in ("s1", "s2")]).mean()
        loss_ub = np.concatenate([numpy_cross_entropy(b[s], y12) * mask2 for s in ("s1", "s2")]).mean()
        if step >= 1:
            v = np.zeros(3)
            for i in range(len(yb)):  # now_mask[targets_u_b] = mask_l * mask_b: the last write wins
                v[yb[i]] = float(u_true[i] != -2) * float(qb[i].max() >= threshold)
            if v.sum() > 0:
                estimate = rho * estimate + (1 - rho) * v / v.sum()
                distances = distances + [_numpy_symmetric_kl(estimate, a) for a in anchors]

        batch = tf.nest.map_structure(tf.convert_to_tensor, ((x_l, y_l), (u_w, u_s1, u_s2, u_true)))
        logs, outputs = model.train_step_with_outputs(batch)
        np.testing.assert_array_equal(outputs["pseudo_labels"], y1)
        np.testing.assert_array_equal(outputs["mask"] > 0, mask1)
        np.testing.assert_array_equal(outputs["balanced_targets"], y12)
        np.testing.assert_array_equal(outputs["balanced_mask"] > 0, mask2)
        for name, value in (("loss_x", loss_x), ("loss_xb", loss_xb), ("loss_u", loss_u), ("loss_ub", loss_ub),
                            ("loss", loss_x + loss_xb + loss_u + loss_ub), ("tau1", tau1)):
            np.testing.assert_allclose(float(logs[name]), value, rtol=2e-4, atol=1e-6, err_msg=f"step {step} {name}")
        np.testing.assert_allclose(model.unlabeled_distribution.numpy(), estimate, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.distance_sums.numpy(), distances, rtol=1e-4, atol=1e-6)
    # tau1: 2 until the first update at step 2, then from the distances of step 1 alone
    # (step 0 precedes estimation_start_step), then 2 * 1/3 ... at step 4 from steps 2-3.
    assert tau1_seen[:2] == [2.0, 2.0] and tau1_seen[2] != 2.0 and tau1_seen[4] != tau1_seen[2]
    assert not np.allclose(model.unlabeled_distribution.numpy(), 1 / 3)


def test_ema_variants():
    images = class_images([0, 1, 2, 3], np.random.default_rng(0))
    batch = ((images, np.array([0, 1, 2, 3], np.int32)), (images, images, images))
    acr = tiny_daso(algorithm="acr", ema_decay=0.9, ema_warmup=False, ema_copy_batch_norm=True)
    acr.compile()
    before = [w.numpy() for w in acr.ema_network.weights]
    acr.train_step_with_outputs(tf.nest.map_structure(tf.convert_to_tensor, batch))
    for old, ema, online in zip(before, acr.ema_network.weights, acr.online_network.weights):
        if online.trainable:  # weights: constant decay 0.9 from the first step on
            np.testing.assert_allclose(ema.numpy(), 0.9 * old + 0.1 * online.numpy(), rtol=1e-5, atol=1e-7)
        else:  # BatchNorm moving statistics: copied
            np.testing.assert_array_equal(ema.numpy(), online.numpy())
            assert not np.allclose(ema.numpy(), old)
    daso_ema = tiny_daso(algorithm="acr", ema_decay=0.9)  # the defaults: DASO's EMA
    daso_ema.compile()
    for _ in range(2):
        before = [w.numpy() for w in daso_ema.ema_network.weights]
        daso_ema.train_step_with_outputs(tf.nest.map_structure(tf.convert_to_tensor, batch))
    for old, ema, online in zip(before, daso_ema.ema_network.weights, daso_ema.online_network.weights):
        # step 1: decay min(1 - 1/2, 0.9) = 0.5 on weights AND BatchNorm statistics
        np.testing.assert_allclose(ema.numpy(), 0.5 * old + 0.5 * online.numpy(), rtol=1e-5, atol=1e-7)


def test_optimizer_protocols():
    schedule = CosineSchedule(0.03, total_steps=1000)
    for step, expected in ((0, 0.03), (500, 0.03 * math.cos(7 * math.pi / 32)), (1000, 0.03 * math.cos(7 * math.pi / 16))):
        assert schedule.value_at(step) == pytest.approx(expected, rel=1e-12)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
    acr = daso_tf.ACR.default_optimizer(lr_schedule="cosine", decay_bias_and_norm=False, total_steps=1000)
    config = acr.get_config()
    assert config["learning_rate"]["config"] == {"base_learning_rate": 0.03, "total_steps": 1000,
                                                 "num_cycles": 0.4375, "warmup_steps": 0}
    assert config["l2_exclude"] == ["bias", "gamma", "beta"] and config["l2"] == 5e-4
    # on the WRN + two heads: exactly the BatchNorm scales/offsets and the head biases go undecayed
    model = tiny_daso(algorithm="acr")
    undecayed = {v.path.split("/")[-1] for v in model.trainable_variables if not acr.l2_applies_to(v)}
    decayed = {v.path.split("/")[-1] for v in model.trainable_variables if acr.l2_applies_to(v)}
    assert undecayed == {"gamma", "beta", "bias"} and decayed == {"kernel"}
    daso = daso_tf.ACR.default_optimizer(total_steps=1000)  # DASO's protocol: the reference SGD
    assert daso.get_config()["learning_rate"] == 0.03 and daso.get_config()["l2_exclude"] == []
    with pytest.raises(ValueError, match="lr_schedule"):
        daso_tf.ACR.default_optimizer(lr_schedule="step")
    # coupled L2 skips excluded names: w <- w - lr * (grad + l2 * w) with grad 0
    import keras

    kernel, bias = keras.Variable(np.ones(2), name="kernel"), keras.Variable(np.ones(2), name="bias")
    sgd = CoupledL2SGD(learning_rate=0.1, momentum=0.0, l2=0.5, l2_exclude=("bias",))
    sgd.apply([np.zeros(2), np.zeros(2)], [kernel, bias])
    np.testing.assert_allclose(kernel.numpy(), [0.95, 0.95])
    np.testing.assert_array_equal(bias.numpy(), [1.0, 1.0])


def test_evaluation_and_export_use_the_balanced_head(tmp_path):
    model = tiny_daso(algorithm="acr")
    model.compile()
    ema = model.ema_network
    ema.head(BALANCED_HEAD).kernel.assign(ema.head(BALANCED_HEAD).kernel * 3.0)  # unlike head 1
    images = class_images([0, 1, 2, 3], np.random.default_rng(1))
    features = ema.features(images, training=False)
    balanced, standard = ema.head(BALANCED_HEAD)(features), ema.classifier(features)
    np.testing.assert_allclose(model(images), balanced, rtol=1e-6)
    assert not np.allclose(balanced, standard)
    version_dir = model.export(str(tmp_path), model_name="acr")
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(balanced), rtol=1e-4, atol=1e-6)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    names = dict(tf.train.list_variables(path))
    for state in ("tau1_current", "unlabeled_distribution", "distance_sums"):
        assert f"model/{state}/.ATTRIBUTES/VARIABLE_VALUE" in names


def test_acr_refuses_bad_arguments():
    with pytest.raises(ValueError, match="labeled_class_counts"):
        daso_tf.ACR(dense_backbone(), 3)
    with pytest.raises(ValueError, match="distribution_momentum"):
        daso_tf.ACR(dense_backbone(), 3, labeled_class_counts=[3, 2, 1], distribution_momentum=1.0)


@pytest.mark.parametrize("name", ["acr", "debiaspl"])
def test_keras_format_round_trips_the_learners_state(name, tmp_path):
    import keras

    model = tiny_daso(algorithm=name, **({"adaptation_period": 3} if name == "acr" else {}))
    model.compile()
    model.optimizer.build(model.trainable_variables)
    state = {"acr": ("tau1_current", "unlabeled_distribution", "distance_sums"), "debiaspl": ("qhat",)}[name]
    for attribute in state:  # non-default state values
        variable = getattr(model, attribute)
        variable.assign(np.linspace(0.1, 0.9, int(np.prod(variable.shape))).reshape(variable.shape))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    for attribute in state:
        np.testing.assert_array_equal(getattr(loaded, attribute).numpy(), getattr(model, attribute).numpy())
    images = class_images([0, 1, 2, 3], np.random.default_rng(2))
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6)
