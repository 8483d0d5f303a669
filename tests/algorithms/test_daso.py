"""DASO model: the train step's wiring, state, checkpointing and user-facing behaviour.

The formulas themselves are checked against the reference in tests/test_golden_reference.py
and the whole training dynamics in tests/tools/test_replay.py; here we check what the model
adds: the order of updates, the warm-up switch, the EMA, errors and checkpoint restore.
"""

import numpy as np
import pytest
import tensorflow as tf

import daso_tf
from daso_tf.pseudo_labels import blend_pseudo_labels, distribution_weights, semantic_probs
from tests.helpers import as_dataset, model_state, synthetic_batches, tiny_daso


def run_steps(model, batches):
    model.optimizer.build(model.trainable_variables)  # no variable creation inside the trace
    step = tf.function(model.train_step_with_outputs)
    history = []
    for batch in batches:
        logs, outputs = step(batch)
        history.append(({k: float(v) for k, v in logs.items()},
                        {k: np.array(v) for k, v in outputs.items()}))
    return history


def test_first_step_follows_the_reference_order():
    model = tiny_daso(warmup_steps=0, histogram_period=1)
    model.compile()
    batches = synthetic_batches(1)
    (x_l, y_l), (u_w, u_s, _) = batches[0]
    # Expected queue content: the EMA network (== online at step 0) encodes x_l with BN in
    # training mode BEFORE the online forward pass.
    expected_features = model.ema_network.features(x_l, training=True).numpy()
    model.ema_network.set_weights(model.online_network.get_weights())  # undo the BN-stat update
    initial = model.online_network.get_weights()
    (logs, outputs), = run_steps(model, batches)
    for k in range(model.num_classes):
        if (y_l == k).any():
            np.testing.assert_allclose(model.queue.prototypes.numpy()[k],
                                       expected_features[y_l == k].mean(0), rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_array_equal(model.queue.prototypes.numpy()[k], 0.0)
    # Blending (warm-up 0: active at step 0) uses THIS batch's semantic probabilities and the
    # empty histogram's uniform weights, and the mask is taken on the blended p'.
    online = daso_tf.models.classifier_network.ClassifierNetwork  # noqa: F841 (import check)
    model_check = tiny_daso(warmup_steps=0)
    model_check.online_network.set_weights(initial)
    images = np.concatenate([x_l, u_w, u_s])
    features, logits = model_check.online_network.features_and_logits(images, training=True)
    b, bu = len(x_l), len(u_w)
    p = tf.nn.softmax(logits[b:b + bu]).numpy()
    q = semantic_probs(features[b:b + bu], model.queue.prototypes, 0.05).numpy()
    v = distribution_weights(np.zeros(model.num_classes), 1.5).numpy()
    blended = blend_pseudo_labels(p, q, v).numpy()
    np.testing.assert_array_equal(outputs["pseudo_labels"], blended.argmax(-1))
    np.testing.assert_array_equal(outputs["mask"], (blended.max(-1) >= 0.5).astype(np.float32))
    np.testing.assert_array_equal(outputs["linear_pseudo_labels"], p.argmax(-1))
    # The histogram counts every final pseudo-label, masked or not.
    np.testing.assert_array_equal(model.histogram.counts.numpy(),
                                  np.bincount(blended.argmax(-1), minlength=model.num_classes))
    assert int(model.step.numpy()) == 1


def test_warmup_switch_is_in_the_graph_and_gates_daso():
    model = tiny_daso(warmup_steps=2)
    model.compile()
    model.optimizer.build(model.trainable_variables)
    traces = []
    original = model.train_step_with_outputs

    def counted(batch):
        traces.append(1)
        return original(batch)

    step = tf.function(counted)
    semantic, aligns = [], []
    for batch in synthetic_batches(4):
        logs, outputs = step(batch)
        semantic.append(np.array(outputs["semantic_pseudo_labels"]))
        aligns.append(float(logs["loss_align"]))
    assert len(traces) == 1, "crossing the warm-up must not retrace"
    assert (semantic[0] == -1).all() and (semantic[1] == -1).all()
    assert (semantic[2] >= 0).all() and (semantic[3] >= 0).all()
    assert aligns[0] == 0.0 and aligns[1] == 0.0 and aligns[2] > 0.0


def test_ema_follows_the_decay_schedule_for_weights_and_bn_statistics():
    model = tiny_daso(ema_decay=0.5)
    model.compile()
    batches = synthetic_batches(3)
    run_steps(model, batches[:1])
    # t = 0: decay min(1 - 1/1, 0.5) = 0 -> the EMA equals the online network, BN stats included.
    for ema, online in zip(model.ema_network.weights, model.online_network.weights):
        np.testing.assert_allclose(ema.numpy(), online.numpy(), rtol=1e-6, atol=1e-7)
    ema_before = [w.numpy() for w in model.ema_network.weights]
    # The EMA network's own BN statistics move when it encodes x_l (training mode) before the
    # EMA update; reproduce that part by hand.
    model_copy = tiny_daso(ema_decay=0.5)
    model_copy.ema_network.set_weights(ema_before)
    model_copy.ema_network.features(batches[1][0][0], training=True)
    ema_after_encode = [w.numpy() for w in model_copy.ema_network.weights]
    run_steps(model, batches[1:2])
    # t = 1: decay min(1 - 1/2, 0.5) = 0.5.
    for before, ema, online in zip(ema_after_encode, model.ema_network.weights, model.online_network.weights):
        np.testing.assert_allclose(ema.numpy(), 0.5 * before + 0.5 * online.numpy(), rtol=1e-5, atol=1e-6)


def test_only_the_online_network_is_trained():
    model = tiny_daso()
    online_ids = {id(v) for v in model.online_network.trainable_weights}
    assert {id(v) for v in model.trainable_weights} == online_ids
    assert all(not v.trainable for v in model.ema_network.weights)
    # ...while the EMA layers still use batch statistics in training mode.
    assert all(layer.trainable for layer in model.ema_network.backbone.layers)


def test_checkpoint_restore_continues_identically(tmp_path):
    batches = synthetic_batches(5)
    model = tiny_daso()
    model.compile()
    run_steps(model, batches[:3])
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    run_steps(model, batches[3:])
    uninterrupted = model_state(model)

    restored = tiny_daso()
    restored.compile()
    restored.optimizer.build(restored.trainable_variables)
    tf.train.Checkpoint(model=restored, optimizer=restored.optimizer).read(path).assert_consumed()
    assert int(restored.step.numpy()) == 3
    run_steps(restored, batches[3:])
    resumed = model_state(restored)
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)


def test_fit_learns_a_long_tailed_problem_and_daso_runs():
    tf.keras.utils.set_random_seed(1)
    train = synthetic_batches(120, labeled=8, unlabeled=16, seed=3)
    model = tiny_daso(warmup_steps=40, histogram_period=10, threshold=0.8)
    model.compile()
    history = model.fit(as_dataset(train).repeat(), steps_per_epoch=40, epochs=3, verbose=0).history
    assert history["loss_x"][-1] < history["loss_x"][0]
    assert history["loss_align"][-1] > 0.0  # DASO active after the warm-up
    assert int(model.step.numpy()) == 120
    assert model.histogram.counts.numpy().sum() == 10 * 16
    rng = np.random.default_rng(11)
    from tests.helpers import class_images
    labels = np.repeat(np.arange(4), 16)
    images = class_images(labels, rng)
    results = model.evaluate(images, labels, batch_size=16, verbose=0, return_dict=True)
    assert results["accuracy"] > 0.6  # chance is 0.25
    np.testing.assert_allclose(model.predict(images[:4], verbose=0),
                               model.ema_network(images[:4], training=False), rtol=1e-5)


def test_clear_errors_for_bad_input():
    model = tiny_daso()
    model.compile()
    (x_l, y_l), (u_w, u_s, _) = synthetic_batches(1)[0]
    with pytest.raises(ValueError, match="x_labeled, y_labeled"):
        model.train_step((x_l, y_l))
    with pytest.raises(ValueError, match="channels"):
        model.train_step(((x_l[..., :1], y_l), (u_w, u_s)))
    with pytest.raises(ValueError, match="integer class ids"):
        model.train_step(((x_l, y_l.astype(np.float32)), (u_w, u_s)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        model.train_step(((x_l, y_l + 10), (u_w, u_s)))
    with pytest.raises(ValueError, match="same images"):
        model.train_step(((x_l, y_l), (u_w, u_s[:3])))
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="labeled_class_counts"):
        daso_tf.DASO(daso_tf.WideResNet(10, 1), 4, labeled_class_counts=[1, 2])
    with pytest.raises(ValueError, match="dist_temperature"):
        daso_tf.DASO(daso_tf.WideResNet(10, 1), 4, dist_temperature=0)


def test_pseudo_label_diagnostics_count_selected_labels_against_truth():
    model = tiny_daso(threshold=0.0)  # every sample passes the mask
    model.compile()
    batches = synthetic_batches(2)
    history = run_steps(model, [((b[0]), b[1]) for b in batches])
    diagnostics = model.pseudo_label_diagnostics()
    truth = np.concatenate([b[1][2] for b in batches])
    predicted = np.concatenate([outputs["pseudo_labels"] for _, outputs in history])
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (truth, predicted), 1)
    assert diagnostics["confusion"] == expected.tolist()
    assert diagnostics["mask_rate"] == 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(diagnostics["recall"], np.diag(expected) / expected.sum(1))
    assert model.pseudo_label_diagnostics()["selected"] == [0, 0, 0, 0]  # reset


def test_pseudo_label_diagnostics_count_all_samples_apart_from_the_selected_ones():
    model = tiny_daso(threshold=0.6)  # some samples pass the mask, some do not
    model.compile()
    batches = synthetic_batches(3, seed=5)
    history = run_steps(model, [((b[0]), b[1]) for b in batches])
    diagnostics = model.pseudo_label_diagnostics()
    truth = np.concatenate([b[1][2] for b in batches])
    predicted = np.concatenate([outputs["pseudo_labels"] for _, outputs in history])
    mask = np.concatenate([np.asarray(outputs["mask"]) for _, outputs in history]) > 0
    everything, selected = np.zeros((4, 4), int), np.zeros((4, 4), int)
    np.add.at(everything, (truth, predicted), 1)
    np.add.at(selected, (truth[mask], predicted[mask]), 1)
    assert diagnostics["confusion_all"] == everything.tolist()
    assert diagnostics["confusion"] == selected.tolist()
    assert 0 < mask.mean() < 1, mask.mean()  # both kinds of sample occur
    assert diagnostics["mask_rate"] == pytest.approx(mask.mean())
    assert model.pseudo_label_diagnostics()["confusion_all"] == np.zeros((4, 4), int).tolist()  # reset
