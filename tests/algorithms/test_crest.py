"""CReST+ (daso_tf.algorithms.crest, FixMatchCReST, ReMixMatchCReST) and the generation loop
(daso_tf.training.generations): rates, selection and schedules by hand; a new generation's
resets; a Keras user's loop that resumes across a generation boundary; export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.crest import progressive_temperature, select_pseudo_labels, selection_rates
from daso_tf.training.generations import GenerationLoop
from tests.helpers import model_state, small_long_tailed_data, synthetic_batches, tiny_daso

CIFAR10_N1500 = [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]


def test_selection_rates_are_indexed_in_reverse():
    rates = selection_rates(CIFAR10_N1500, alpha=3.0)
    # (N_k / N_max)^(1/3), e.g. (15 / 1500)^(1/3) = 0.2154
    np.testing.assert_allclose(rates, [(n / 1500) ** (1 / 3) for n in CIFAR10_N1500], rtol=1e-6)
    # the rate predicted class i uses is mu[K-1-i]: the head class gets the tail's ratio
    used = rates[::-1]
    np.testing.assert_allclose(used, [0.215, 0.255, 0.301, 0.358, 0.426, 0.505, 0.599, 0.711, 0.843, 1.0], atol=6e-4)


def test_selection_by_hand():
    probs = np.array([[.9, .05, .05], [.5, .3, .2], [.7, .2, .1],  # predicted 0 (conf .9, .5, .7)
                      [.2, .6, .2], [.1, .8, .1],                   # predicted 1 (conf .6, .8)
                      [.1, .2, .7]])                                # predicted 2
    rates = np.array([1.0, 0.5, 0.34], np.float32)
    # class 0 uses rates[2]: int(0.34 * 3) = 1 -> sample 0; class 1 rates[1]: int(0.5 * 2) = 1 ->
    # sample 4 (conf .8); class 2 rates[0]: int(1.0 * 1) = 1 -> sample 5. No threshold.
    np.testing.assert_array_equal(select_pseudo_labels(probs, rates), [0, -1, -1, -1, 1, 2])
    # a class whose count rounds down to 0 selects nothing: int(.3 * 3), int(.4 * 2), int(.9 * 1) = 0
    np.testing.assert_array_equal(select_pseudo_labels(probs, np.array([0.9, 0.4, 0.3], np.float32)), [-1] * 6)


def test_progressive_temperature_schedule():
    assert [progressive_temperature(g, 5, 0.5) for g in range(5)] == [1.0, 0.875, 0.75, 0.625, 0.5]
    assert progressive_temperature(0, 1, 0.5) == 1.0


def tiny_crest(algorithm="fixmatch_crest", **kwargs):
    defaults = dict(num_unlabeled=6, total_steps=10, num_generations=5, seed=3, labeled_class_counts=[8, 4, 2, 1])
    return tiny_daso(algorithm=algorithm, **{**defaults, **kwargs})


def test_fixmatch_crest_aligns_with_the_generation_temperature():
    model = tiny_crest()
    probs = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    prior = np.array([8, 4, 2, 1]) / 15
    for generation, temperature in ((0, 1.0), (2, 0.75)):
        model.generation.assign(generation)
        model.aligner.num_batches.assign(0)  # one batch in the queue: its mean
        target = prior ** temperature / (prior ** temperature).sum()
        expected = probs * (target + 1e-6) / (probs.mean(axis=0) + 1e-6)
        expected /= expected.sum(axis=1, keepdims=True)
        aligned, _ = model.refine_pseudo_labels(tf.constant(probs, tf.float32), {}, tf.constant(0, tf.int64))
        np.testing.assert_allclose(aligned, expected, rtol=1e-5)
    off = tiny_crest(distribution_alignment=False)
    np.testing.assert_array_equal(off.refine_pseudo_labels(probs, {}, 0)[0], probs)


def test_a_new_generation_resets_weights_ema_optimizer_but_not_the_rest():
    model = tiny_crest()
    model.compile()
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step_with_outputs)
    batches = synthetic_batches(3)
    for batch in batches[:2]:
        step(batch)
    queue_batches = int(model.aligner.num_batches.numpy())
    online_before = [w.numpy().copy() for w in model.online_network.weights]
    probs = np.eye(4)[[0, 0, 1, 2, 3, 3]] * 0.6 + 0.1
    selected = model.start_generation(probs, step=2)
    # rates (n/8)^(1/3) = [1, .794, .630, .5], reversed: predicted 0 keeps int(.5 * 2) = 1 (the
    # first of a tie), 1 and 2 keep int(.630 * 1) = int(.794 * 1) = 0, 3 keeps int(1 * 2) = 2
    np.testing.assert_array_equal(selected, [0, -1, -1, -1, 3, 3])
    np.testing.assert_array_equal(model.pseudo_labeled.numpy(), selected)
    np.testing.assert_array_equal(model.current_labeled_counts.numpy(), [9, 4, 2, 3])
    assert (int(model.generation.numpy()), int(model.generation_start.numpy())) == (1, 2)
    assert int(model.step.numpy()) == 2 and int(model.aligner.num_batches.numpy()) == queue_batches  # kept
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(online_before, model.online_network.weights)]
    assert all(changed[i] for i, w in enumerate(model.online_network.weights) if "kernel" in w.path)
    for ema, online in zip(model.ema_network.weights, model.online_network.weights):
        np.testing.assert_array_equal(ema.numpy(), online.numpy())
    assert int(model.optimizer.iterations.numpy()) == 0
    assert all(not v.numpy().any() for v in model.optimizer.momentum_buffers)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.03)
    # the fresh weights are a function of (seed, generation): another model draws the same
    other = tiny_crest()
    other.start_generation(probs, step=2)
    for a, b in zip(model.online_network.weights, other.online_network.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the EMA warm-up restarts: the first step of the generation copies the trained weights
    step(batches[2])
    for ema, online in zip(model.ema_network.weights, model.online_network.weights):
        np.testing.assert_allclose(ema.numpy(), online.numpy(), rtol=1e-6, atol=1e-7)
    images, labels = model.labeled_training_set(np.zeros((15, 16, 16, 3), np.uint8), np.zeros(15, np.int64),
                                                np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((1, 16, 16, 3), np.uint8))
    assert len(images) == 18 and labels[15:].tolist() == [0, 3, 3]
    assert images[15:, 0, 0, 0].tolist() == [0, 4, 5]  # the selected unlabeled images


def test_remixmatch_crest_ramp_restarts_every_generation():
    model = tiny_crest("remixmatch_crest", total_steps=2500)  # generations of 500 steps
    assert model.rampup_steps == 8  # round(0.016 * 500)
    assert tiny_crest("remixmatch_crest", total_steps=2500, rampup_steps=3).rampup_steps == 3
    model.generation_start.assign(1000)
    ramp = [float(model.consistency_ramp(tf.constant(s, tf.int64), "float32")) for s in (1000, 1004, 1008, 1400)]
    assert ramp == [0.0, 0.5, 1.0, 1.0]
    model.generation.assign(4)
    assert float(model.alignment_temperature(0)) == 0.5
    assert tiny_crest("remixmatch_crest", progressive_alignment=False).alignment_temperature(0) is None


def test_generation_segments_and_boundaries():
    model = tiny_crest(total_steps=10, num_generations=3)  # generations of 3 steps; the last has 4
    loop = GenerationLoop(model, lt_data=None)
    assert loop.boundaries(10) == [3, 6]
    assert loop.segments(0, 10) == [(0, 3), (3, 6), (6, 10)]
    assert loop.segments(4, 10) == [(4, 6), (6, 10)]
    assert [model.generation_due(s) for s in (0, 2, 3, 8, 9)] == [0, 0, 1, 2, 2]


# --------------------------------------------------------------------------- a Keras user's loop
def cyclic_stream(lt_data, start_step, labeled=4, unlabeled=8):
    """Batch k: labeled / unlabeled examples k*B ... (k+1)*B - 1 (cyclically), unaugmented (u_s =
    u_w): a pure function of (data, k), like train_stream, without its augmentation's cost."""
    x_l, y_l = tf.constant(lt_data.labeled_images), tf.constant(lt_data.labeled_labels, tf.int32)
    u = tf.constant(lt_data.unlabeled_images)

    def batch(k):
        take_l = (k * labeled + tf.range(labeled, dtype=tf.int64)) % len(lt_data.labeled_labels)
        take_u = (k * unlabeled + tf.range(unlabeled, dtype=tf.int64)) % len(lt_data.unlabeled_labels)
        u_w = tf.gather(u, take_u)
        return (tf.gather(x_l, take_l), tf.gather(y_l, take_l)), (u_w, u_w)

    return tf.data.Dataset.range(start_step, 1 << 40).map(batch)


def train_generations(model, lt_data, start, stop, total):
    loop = GenerationLoop(model, lt_data, output_size=16, log=lambda *_: None)
    for first, last in loop.segments(start, total):
        if first >= stop:
            break
        loop.advance(first)
        model.fit(cyclic_stream(loop.training_data(), first), steps_per_epoch=min(last, stop) - first, epochs=1,
                  verbose=0)
    return loop


@pytest.mark.slow
def test_user_loop_resumes_across_a_generation_boundary_and_exports(tmp_path):
    lt_data = small_long_tailed_data()
    kwargs = dict(num_unlabeled=12, total_steps=6, num_generations=2, labeled_class_counts=[6, 3, 2, 1])

    def new_model():
        keras.utils.set_random_seed(0)  # the same initial weights
        model = tiny_crest(**kwargs)
        model.compile()
        return model

    straight = new_model()  # checkpointed at step 2 (before the boundary at 3), not interrupted
    train_generations(straight, lt_data, 0, 2, 6)
    tf.train.Checkpoint(model=straight, optimizer=straight.optimizer).write(str(tmp_path / "ckpt"))
    loop = train_generations(straight, lt_data, 2, 6, 6)
    assert int(straight.generation.numpy()) == 1 and int(straight.step.numpy()) == 6
    assert len(loop.training_data().labeled_labels) == 12 + int((straight.pseudo_labeled.numpy() >= 0).sum())

    resumed = new_model()  # a new process: restores step 2, crosses the boundary itself
    resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).read(str(tmp_path / "ckpt")).assert_consumed()
    assert int(resumed.step.numpy()) == 2 and int(resumed.generation.numpy()) == 0
    train_generations(resumed, lt_data, 2, 6, 6)
    expected, got = model_state(straight), model_state(resumed)
    assert expected.keys() == got.keys()
    bad = [key for key in expected if not np.allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)]
    assert not bad, bad

    version_dir = resumed.export(tmp_path / "serving", model_name="crest")
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    images = lt_data.unlabeled_images[:3]
    np.testing.assert_allclose(served(images=tf.constant(images))["probabilities"].numpy(),
                               tf.nn.softmax(resumed(images)).numpy(), rtol=1e-5, atol=1e-6)


def test_run_arguments_from_the_data():
    import types

    from daso_tf.algorithms import FixMatchCReST, ReMixMatchCReST
    from daso_tf.config import ExperimentConfig, apply_overrides

    config = ExperimentConfig()
    known = types.SimpleNamespace(unlabeled_labels=np.zeros(30), unlabeled_counts=[10, 20])
    unknown = types.SimpleNamespace(unlabeled_labels=np.zeros(100), unlabeled_counts=None)  # STL-10
    assert FixMatchCReST.data_arguments(config, known) == {"num_unlabeled": 30}
    assert ReMixMatchCReST.data_arguments(config, unknown) == {"num_unlabeled": 100, "distribution_alignment": False}
    apply_overrides(config, {"algorithm.distribution_alignment": "true"})
    assert FixMatchCReST.data_arguments(config, unknown) == {"num_unlabeled": 100}  # the user's choice stands
    assert FixMatchCReST.hyperparameters()["num_generations"] == 5  # the reference's 5 x 50k of 250k
    assert ReMixMatchCReST.hyperparameters()["rampup_steps"] is None  # 0.016 of a generation
