"""USADTM: the IIC clustering loss, the prototype pseudo-labels and one whole step against the
reference's tmi_loss.py / usadtm_model.py / feature_queue.py re-implemented in NumPy."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.usadtm import iic_loss, prototype_pseudo_labels
from tests.helpers import synthetic_batches, tiny_daso


def softmax(logits):
    logits = np.asarray(logits, "float64")
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_mi_loss(x, y, eps=sys.float_info.epsilon):
    """tmi_loss.MI_loss: joint of the two softmaxes, symmetrised and normalised; marginals
    taken before the joint is clamped; joint and marginals clamped at eps."""
    p, q = softmax(x), softmax(y)
    joint = (p[:, :, None] * q[:, None, :]).sum(0)
    joint = (joint + joint.T) / 2
    joint = joint / joint.sum()
    k = joint.shape[0]
    p_i = np.broadcast_to(joint.sum(1)[:, None], (k, k)).copy()
    p_j = np.broadcast_to(joint.sum(0)[None, :], (k, k)).copy()
    joint[joint < eps], p_i[p_i < eps], p_j[p_j < eps] = eps, eps, eps
    return float(-(joint * (np.log(joint) - np.log(p_i) - np.log(p_j))).sum())


def reference_pseudo_labels(features, prototypes, threshold):
    """usadtm_model.forward_train: cosine argmax (torch CosineSimilarity, eps 1e-8), euclidean_dist
    argmin, weight = agreement * (cosine >= threshold)."""
    norm_f = np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-8)
    norm_p = np.maximum(np.linalg.norm(prototypes, axis=-1, keepdims=True), 1e-8)
    similarity = (features / norm_f) @ (prototypes / norm_p).T
    squared = (features ** 2).sum(1)[:, None] + (prototypes ** 2).sum(1)[None, :] - 2 * features @ prototypes.T
    distance = np.sqrt(np.maximum(squared, 1e-12))
    labels = similarity.argmax(1)
    weight = (labels == distance.argmin(1)) & (similarity.max(1) >= threshold)
    return labels, similarity.max(1), weight.astype(np.float64)


def test_iic_loss_hand_values_and_reference_formula():
    # Confident, identical one-hot predictions spread evenly over K classes: P = I / K, so
    # I(a; b) = sum_k (1/K) log((1/K) / (1/K)^2) = log K and the loss is -log K.
    one_hot = 60.0 * np.eye(4)[np.arange(8) % 4]
    assert float(iic_loss(tf.constant(one_hot), tf.constant(one_hot))) == pytest.approx(-np.log(4), abs=1e-9)
    # independent predictions: I = 0
    uniform = np.zeros((5, 3))
    assert float(iic_loss(tf.constant(uniform), tf.constant(uniform))) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    for scale in (1.0, 40.0):  # 40: joint entries below the clamp
        a, b = rng.normal(size=(2, 16, 5)) * scale
        assert float(iic_loss(tf.constant(a), tf.constant(b))) == pytest.approx(reference_mi_loss(a, b), rel=1e-9,
                                                                                abs=1e-12)
    # gradients stay finite with clamped entries
    a = tf.Variable(rng.normal(size=(6, 5)) * 40)
    with tf.GradientTape() as tape:
        loss = iic_loss(a, tf.constant(rng.normal(size=(6, 5))))
    assert np.isfinite(tape.gradient(loss, a).numpy()).all()


def test_prototype_pseudo_labels_need_agreement_and_threshold():
    prototypes = np.array([[1.0, 0.0], [0.0, 1.0], [10.0, 10.0], [0.0, 0.0]])  # class 3 never seen: zero
    features = np.array([
        [2.0, 0.1],    # cosine: class 0 (0.9988); nearest: class 0 -> kept
        [0.9, 0.8],    # cosine: class 2 (0.9983); nearest: class 0 (distance 0.806) -> disagreement, dropped
        [0.1, 3.0],    # cosine: class 1; nearest: class 1 -> kept
        [1.0, 1.2],    # cosine: class 2 (0.996); nearest: class 1 (distance 1.020) -> dropped
        [1.0, -1.0],   # cosine: class 0 (0.707 < 0.85); nearest: class 0 -> below threshold
    ])
    labels, confidence, mask = (t.numpy() for t in prototype_pseudo_labels(tf.constant(features),
                                                                          tf.constant(prototypes), 0.85))
    np.testing.assert_array_equal(labels, [0, 2, 1, 2, 0])
    np.testing.assert_array_equal(mask, [1, 0, 1, 0, 0])
    assert confidence[4] == pytest.approx(np.sqrt(0.5))
    rng = np.random.default_rng(1)
    features, prototypes = rng.normal(size=(32, 6)), rng.normal(size=(5, 6))
    prototypes[3] = 0.0
    expected = reference_pseudo_labels(features, prototypes, 0.2)
    for got, want in zip(prototype_pseudo_labels(tf.constant(features), tf.constant(prototypes), 0.2), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert 0 < expected[2].sum() < 32


def three_view_batch(batch):
    (x_l, y_l), (u_w, u_s, u_true) = batch
    return (x_l, y_l), (u_w.copy(), u_w, u_s, u_true)  # synthetic identity = the weak image


def test_two_steps_against_the_reference_model():
    counts = [3, 2, 1, 1]
    model = tiny_daso(algorithm="usadtm", labeled_class_counts=counts, warmup_steps=1, threshold=0.0)
    assert model.unlabeled_views == ("identity", "weak", "strong")
    assert model.banks.class_sizes == (15, 10, 5, 5)  # 5 x N_k
    banks = [[] for _ in range(4)]
    prototypes = np.zeros((4, model.feature_dim))
    for step, batch in enumerate(synthetic_batches(2, labeled=6, unlabeled=5, seed=3)):
        data = three_view_batch(batch)
        (x_l, y_l), (u_id, u_w, u_s, _) = data
        features, logits = (t.numpy().astype("float64") for t in model.online_network.features_and_logits(
            np.concatenate([x_l, u_id, u_w, u_s]), training=True))
        losses, outputs = model.forward_and_compute_losses(model.unpack_train_batch(data), tf.constant(step, "int64"))
        # feature_queue.enqueue: FIFO of 5 N_k labeled features, prototypes of the classes in the batch
        for k in range(4):
            selected = list(features[:6][y_l == k])
            if selected:
                banks[k] = (banks[k] + selected)[-5 * counts[k]:]
                prototypes[k] = np.mean(banks[k], axis=0)
        np.testing.assert_allclose(model.banks.prototypes, prototypes, rtol=1e-4, atol=1e-5)
        z_l, z_id, z_w, z_s = logits[:6], logits[6:11], logits[11:16], logits[16:]
        loss_x = -np.log(softmax(z_l)[np.arange(6), y_l]).mean()
        loss_uc = 0.1 * (reference_mi_loss(z_id, z_w) + reference_mi_loss(z_id, z_s) + reference_mi_loss(z_w, z_s)) / 3
        labels, _, weight = reference_pseudo_labels(features[11:16], prototypes, 0.0)
        if step < 1:  # pretraining: no pseudo-label loss
            weight = np.zeros(5)
        loss_u = np.sum(weight * -np.log(softmax(z_s)[np.arange(5), labels])) / 5
        assert float(losses["loss_x"]) == pytest.approx(loss_x, rel=1e-4)
        assert float(losses["loss_uc"]) == pytest.approx(loss_uc, rel=1e-4, abs=1e-7)
        assert float(losses["loss_u"]) == pytest.approx(loss_u, rel=1e-4, abs=1e-7)
        assert float(losses["loss"]) == pytest.approx(loss_x + loss_uc + loss_u, rel=1e-4)
        np.testing.assert_array_equal(outputs["mask"], weight)
        np.testing.assert_array_equal(outputs["pseudo_labels"], labels if step >= 1 else -np.ones(5))
    assert weight.sum() > 0 and float(losses["loss_u"]) > 0


def test_standard_two_view_batches_are_refused_clearly():
    model = tiny_daso(algorithm="usadtm")
    (x_l, y_l), (u_w, u_s, _) = synthetic_batches(1)[0]
    with pytest.raises(ValueError, match=r"USADTM takes 3 unlabeled views \('identity', 'weak', 'strong'\)"):
        model.unpack_train_batch(((x_l, y_l), (u_w, u_s)))
    with pytest.raises(ValueError, match="labeled_class_counts"):
        tiny_daso(algorithm="usadtm", labeled_class_counts=None)


def test_fit_save_and_export(tmp_path):
    import keras

    model = tiny_daso(algorithm="usadtm", warmup_steps=1)
    model.compile()
    batches = [three_view_batch(b) for b in synthetic_batches(3)]
    dataset = tf.data.Dataset.from_tensor_slices(tuple(
        tuple(np.stack([b[i][j] for b in batches]) for j in range(len(batches[0][i]))) for i in range(2)))
    history = model.fit(dataset, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss_uc"][0] < 0  # -I <= 0
    assert int(model.step.numpy()) == 3 and model.pseudo_label_diagnostics()["mask_rate"] >= 0
    path = tmp_path / "usadtm.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.banks.prototypes, model.banks.prototypes)
    assert loaded.banks.class_sizes == model.banks.class_sizes
    version_dir = model.export(tmp_path / "serving", model_name="usadtm")
    images = batches[0][0][0]
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(model(images)), rtol=1e-5, atol=1e-6)
