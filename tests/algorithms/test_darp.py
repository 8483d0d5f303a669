"""DARP (daso_tf.algorithms.darp) and FixMatch + DARP against hand-computed values and the
reference's solver re-implemented here in NumPy (darp_reproduce.py with scipy's secant)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.darp import DARP, class_scaling, refine_pseudo_labels, secant_root, solve_dual
from daso_tf.data import train_stream
from tests.helpers import model_state, small_long_tailed_data, synthetic_batches, tiny_daso


# --------------------------------------------------------------------------- the reference, in NumPy
def scipy_secant(func, x0, tol=0.1, maxiter=30):
    """scipy.optimize.newton(func, x0, tol=tol, maxiter=maxiter) without fprime (SciPy 1.17
    ``_zeros_py.newton``, secant branch), transcribed."""
    p0 = np.asarray(x0)[()] * 1.0
    p1 = p0 * (1 + 1e-4)
    p1 += 1e-4 if p1 >= 0 else -1e-4
    q0, q1 = func(p0), func(p1)
    if abs(q1) < abs(q0):
        p0, p1, q0, q1 = p1, p0, q1, q0
    for _ in range(maxiter):
        if q1 == q0:
            assert p1 == p0, "scipy raises here"
            return (p1 + p0) / 2.0
        if abs(q1) > abs(q0):
            p = (-q0 / q1 * p1 + p0) / (1 - q0 / q1)
        else:
            p = (-q1 / q0 * p0 + p1) / (1 - q1 / q0)
        if np.isclose(p, p1, rtol=0.0, atol=tol):
            return p
        p0, q0, p1 = p1, q1, p
        q1 = func(p1)
    raise AssertionError("scipy raises here")


def reference_refine(pseudo_orig, target, alpha=2.0, num_iters=10):
    """DARP.step's refinement (estimate_pseudo + scaling + opt_solver) of the reference."""
    num_samples, num_classes = pseudo_orig.shape
    pseudo_labels, k_probs = np.zeros((num_samples, num_classes)), np.zeros(num_classes)
    for i in range(1, num_classes + 1):
        i = num_classes - i
        num_i = int(alpha * target[i])
        idx = np.argsort(-pseudo_orig[:, i], kind="stable")
        pseudo_labels[idx[:num_i], i] = 1
        k_probs[i] = pseudo_orig[idx[:num_i], i].sum()
    weights_u = (target + 1e-6) / (k_probs + 1e-6)
    scaled = pseudo_orig * (pseudo_labels * weights_u.reshape(1, -1)) + 1e-6
    probs = scaled / scaled.sum(axis=1, keepdims=True)
    entropy = (-1 * probs * np.log(probs + 1e-6)).sum(1)
    w = 1 / entropy
    a_e = probs / math.e
    y_t = np.exp(-1 * np.ones(num_classes).reshape(1, -1) / w.reshape(-1, 1))
    prev_y = np.zeros(num_classes)
    for _ in range(num_iters):
        x_t = np.ones(num_samples) / np.sum(a_e * y_t, 1)
        y_t = np.zeros(num_classes)
        for i in range(num_classes):
            y_t[i] = scipy_secant(lambda x, i=i: np.sum(a_e[:, i] * x_t * np.exp(-1 * x / w)) - target[i], prev_y[i])
        prev_y = y_t
        y_t = np.exp(-1 * y_t.reshape(1, -1) / w.reshape(-1, 1))
    x_t = np.ones(num_samples) / np.sum(a_e * y_t, 1)
    return a_e * x_t.reshape(-1, 1) * y_t


def random_predictions(num_samples, num_classes, seed, sharpness=2.0):
    logits = np.random.default_rng(seed).normal(0.0, sharpness, (num_samples, num_classes))
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- the solver
def test_secant_root_by_hand_and_failures():
    # f = 2x - 3 from x0 = 0: second point 1e-4; |f(1e-4)| < |f(0)| swaps them; the secant
    # through (1e-4, -2.9998) and (0, -3) hits 1.5; the next step stays at 1.5 (|dp| = 0).
    assert secant_root(lambda x: 2 * x - 3, 0.0) == 1.5
    with pytest.raises(RuntimeError, match="Failed to converge after 30 iterations"):
        secant_root(np.cbrt, 1.0)  # the secant overshoots the cube root's vertical tangent forever
    with pytest.raises(RuntimeError, match="Tolerance of"):
        secant_root(lambda x: 1.0, 2.0)  # flat: q1 == q0 at distinct points


@pytest.mark.parametrize("seed", range(4))
def test_secant_root_follows_scipy_step_for_step(seed):
    rng = np.random.default_rng(seed)
    a, b, w = rng.uniform(0, 0.4, 300), rng.uniform(0.5, 2.0, 300), rng.uniform(0.3, 3.0, 300)
    for target in (5.0, 40.0, 90.0):
        def g(y):
            return np.sum(a * b * np.exp(-y / w)) - target
        x0 = rng.normal(0, 2)
        assert secant_root(g, x0) == scipy_secant(g, x0)  # identical floating-point path


def test_class_scaling_by_hand():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    # c = [1, 1.5], alpha 2: class 1 keeps int(3.0) = 3 rows (0.8, 0.5, 0.4), class 0 int(2) = 2
    # rows (0.9, 0.6); kappa = [1.5, 1.7]; v = (c + 1e-6) / (kappa + 1e-6)
    selected, weights = class_scaling(p, [1.0, 1.5], 2.0)
    np.testing.assert_array_equal(selected, [[1, 0], [1, 1], [0, 1], [0, 1]])
    np.testing.assert_allclose(weights, [(1 + 1e-6) / (1.5 + 1e-6), (1.5 + 1e-6) / (1.7 + 1e-6)], rtol=1e-12)


def test_refinement_equals_the_reference_and_meets_the_target():
    p = random_predictions(400, 5, seed=1)
    target = np.array([150.0, 100.0, 80.0, 50.0, 20.0])
    refined = refine_pseudo_labels(p, target, alpha=2.0, iterations=10)
    np.testing.assert_allclose(refined, reference_refine(p, target), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(refined.sum(axis=1), 1.0, rtol=1e-12)
    # column sums approach c (the solve stops at tol 0.1 on the duals)
    np.testing.assert_allclose(refined.sum(axis=0), target, rtol=0.05)
    # the dual solve alone, on an already rescaled matrix
    np.testing.assert_allclose(solve_dual(p, target, 3)[:, 0].sum(), 150.0, rtol=0.05)


# --------------------------------------------------------------------------- the layer's step rule
def test_darp_layer_warm_up_period_stale_rows_and_state():
    num_samples, num_classes = 12, 3
    layer = DARP(num_samples, [6.0, 4.0, 2.0], warmup_steps=2, period=2)
    step = tf.function(lambda probs, indices: layer(probs, indices))
    rng = np.random.default_rng(0)
    uniform = np.full((1, num_classes), 1 / 3, np.float32)
    for counter in range(1, 8):
        indices = rng.choice(num_samples, 4, replace=False)
        probs = random_predictions(4, num_classes, seed=counter).astype(np.float32)
        before_ref = layer.pseudo_refined.numpy().copy()
        expected_orig = layer.pseudo_orig.numpy().copy()
        expected_orig[indices] = probs
        out = step(probs, indices).numpy()
        np.testing.assert_allclose(layer.pseudo_orig.numpy(), expected_orig)  # stored every step
        assert int(layer.counter.numpy()) == counter
        if counter <= 2:  # warm-up: p itself
            np.testing.assert_allclose(out, probs)
        elif counter % 2:  # between solves: the stale refinement (uniform before the first)
            np.testing.assert_allclose(out, before_ref[indices])
            if counter == 3:
                np.testing.assert_allclose(out, np.repeat(uniform, 4, axis=0), rtol=1e-6)
        else:  # a solve over the whole set, current batch included
            expected = reference_refine(expected_orig.astype(np.float64), np.array([6.0, 4.0, 2.0]))
            np.testing.assert_allclose(layer.pseudo_refined.numpy(), expected, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(out, expected[indices], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- the learner
def indexed_batches(num_steps, num_unlabeled, seed=0):
    rng = np.random.default_rng(seed)
    return [((x, y), (u_w, u_s, u_true, rng.choice(num_unlabeled, len(u_true), replace=False)))
            for (x, y), (u_w, u_s, u_true) in synthetic_batches(num_steps, seed=seed)]


def tiny_darp(**kwargs):
    defaults = dict(num_unlabeled=20, unlabeled_class_counts=[10, 5, 3, 2], total_steps=10, darp_period=2,
                    threshold=0.5)
    return tiny_daso(algorithm="fixmatch_darp", **{**defaults, **kwargs})


def test_fixmatch_darp_uses_the_refined_pseudo_labels_and_needs_indices():
    model = tiny_darp()
    assert model.darp.warmup_steps == 4 and model.darp.target_counts == [10.0, 5.0, 3.0, 2.0]
    model.compile()
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step_with_outputs)
    for batch in indexed_batches(6, 20):
        _, outputs = step(batch)
    # step 6 (counter 6) solved: the pseudo-labels are argmax of the refined rows of the batch
    refined = model.darp.pseudo_refined.numpy()[batch[1][3]]
    np.testing.assert_array_equal(outputs["pseudo_labels"], refined.argmax(axis=1))
    np.testing.assert_allclose(outputs["confidence"], refined.max(axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="needs each unlabeled sample's dataset index"):
        model.unpack_train_batch(synthetic_batches(1)[0])
    with pytest.raises(ValueError, match="cannot be XLA-compiled"):
        model.compile(jit_compile=True)
    model.compile()  # "auto" resolves to no XLA: the DARP layer does not support it
    assert model.jit_compile is False


def test_a_restored_checkpoint_continues_exactly(tmp_path):
    batches = indexed_batches(6, 20)

    def new_model():
        keras.utils.set_random_seed(0)
        model = tiny_darp(darp_warmup_ratio=0.2)  # warm-up 2 steps, a solve every 2
        model.compile()
        model.optimizer.build(model.trainable_variables)
        return model, tf.function(model.train_step)

    straight, step = new_model()
    for batch in batches[:3]:
        step(batch)
    tf.train.Checkpoint(model=straight, optimizer=straight.optimizer).write(str(tmp_path / "ckpt"))
    for batch in batches[3:]:
        step(batch)
    resumed, step = new_model()
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).read(str(tmp_path / "ckpt")).assert_consumed()
    assert int(resumed.darp.counter.numpy()) == 3
    for batch in batches[3:]:
        step(batch)
    expected, got = model_state(straight), model_state(resumed)
    bad = [key for key in expected if not np.allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)]
    assert not bad, bad


def test_target_from_an_estimate_and_config_round_trip():
    model = tiny_darp(darp_estimate="cifar10_l_500_100_ul_4000_1", num_classes=10, num_unlabeled=1000,
                      unlabeled_class_counts=None, labeled_class_counts=[10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    q = np.array([.048, .140, .150, .129, .083, .084, .074, .120, .107, .065])
    np.testing.assert_allclose(model.darp.target_counts, 1000 * q / q.sum())
    config = model.get_config()
    assert config["darp_estimate"] == "cifar10_l_500_100_ul_4000_1" and config["num_unlabeled"] == 1000
    clone = type(model).from_config(config)
    assert clone.darp.target_counts == model.darp.target_counts
    with pytest.raises(ValueError, match="unlabeled_class_counts"):
        tiny_darp(unlabeled_class_counts=None)


@pytest.mark.slow
def test_fit_on_the_indexed_stream_then_export(tmp_path):
    lt_data = small_long_tailed_data(num_unlabeled=12)
    model = tiny_darp(num_unlabeled=12, unlabeled_class_counts=lt_data.unlabeled_counts, total_steps=4,
                      darp_warmup_ratio=0.5, labeled_class_counts=[6, 3, 2, 1])
    model.compile()
    stream = train_stream(lt_data, labeled_batch_size=4, unlabeled_ratio=2, seed=0, output_size=16,
                          with_unlabeled_indices=True)
    history = model.fit(stream, steps_per_epoch=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and int(model.darp.counter.numpy()) == 4
    refined = model.darp.pseudo_refined.numpy()  # solved at step 4 (warm-up 2, period 2)
    np.testing.assert_allclose(refined.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(refined, 0.25)
    version_dir = model.export(tmp_path / "serving", model_name="darp")
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    images = lt_data.unlabeled_images[:3]
    np.testing.assert_allclose(served(images=tf.constant(images))["probabilities"].numpy(),
                               tf.nn.softmax(model(images)).numpy(), rtol=1e-5, atol=1e-6)


def test_run_arguments_and_refusals():
    import types

    from daso_tf.algorithms import FixMatchDARP
    from daso_tf.config import ConfigError, apply_overrides
    from daso_tf.experiments import get_experiment

    lt_data = types.SimpleNamespace(unlabeled_labels=np.zeros(50), unlabeled_counts=[30, 20])
    matched = get_experiment("cifar10_lt_n1500")
    assert FixMatchDARP.data_arguments(matched, lt_data) == {"num_unlabeled": 50, "unlabeled_class_counts": [30, 20]}
    uniform = get_experiment("cifar10_lt_n1500_uniform")
    assert FixMatchDARP.data_arguments(uniform, lt_data)["darp_estimate"] == "cifar10_l_1500_100_ul_3000_1"
    FixMatchDARP.check_run_config(uniform)
    FixMatchDARP.check_run_config(get_experiment("stl10_lt_n450_g20"))
    with pytest.raises(ConfigError, match="the reference has none for cifar100_l_150_10_ul_300_1"):
        FixMatchDARP.check_run_config(apply_overrides(get_experiment("cifar100_lt_n150"),
                                                      {"data.imbalance_unlabeled": "1"}))
    with pytest.raises(ConfigError, match="reference estimate is for another data setting than the run's "
                                          r"\(cifar10_l_1500_100_ul_3000_100_rev\)"):
        FixMatchDARP.check_run_config(apply_overrides(get_experiment("cifar10_lt_n1500_reversed"), {
            "algorithm.darp_estimate": "cifar10_l_1500_100_ul_3000_1"}))
