"""DebiasPL: q_hat is a per-class vector that follows the batch's mean prediction, the
pseudo-labels are debiased with the PREVIOUS q_hat and the margin uses the updated one, all as
a NumPy re-implementation of the authors' update computes it (the USB bug, a scalar mean 1/K
that leaves q_hat uniform and the method equal to FixMatch, cannot pass)."""

import keras
import numpy as np
import tensorflow as tf

import daso_tf
from tests.helpers import (TINY_SHAPE, class_images, dense_backbone, numpy_cross_entropy, numpy_logits,
                           numpy_softmax, tiny_daso)

NUM_CLASSES = 4
TAU, MOMENTUM, THRESHOLD = 1.0, 0.5, 0.5


def _batch(seed, labeled=4, unlabeled=12):
    rng = np.random.default_rng(seed)
    y_l = rng.choice(NUM_CLASSES, labeled, p=[0.55, 0.25, 0.15, 0.05]).astype(np.int32)
    u_y = rng.choice(NUM_CLASSES, unlabeled, p=[0.55, 0.25, 0.15, 0.05]).astype(np.int32)
    u_w = class_images(u_y, rng)
    u_s = np.clip(u_w.astype(np.int16) + rng.integers(-40, 40, u_w.shape), 0, 255).astype(np.uint8)
    return (class_images(y_l, rng), y_l), (u_w, u_s)


def _model():
    keras.utils.set_random_seed(0)  # the heads' initial weights: the same data in any test order
    model = daso_tf.DebiasPL(dense_backbone(), NUM_CLASSES, normalization=((0.5,) * 3, (0.25,) * 3),
                             labeled_class_counts=[8, 4, 2, 1], debias_tau=TAU, qhat_momentum=MOMENTUM,
                             threshold=THRESHOLD)
    model.build((None,) + TINY_SHAPE)
    model.compile(optimizer=daso_tf.reference_sgd(learning_rate=1e-4))  # the step-1 logits stay diverse
    return model


def _step(model, batch):
    tensors = tf.nest.map_structure(tf.convert_to_tensor, batch)
    logs, outputs = model.train_step_with_outputs(tensors)
    return {k: np.asarray(v) for k, v in logs.items()}, {k: np.asarray(v) for k, v in outputs.items()}


def test_qhat_follows_the_per_class_batch_mean_and_debiases_pseudo_labels():
    model = _model()
    assert model.qhat.shape == (NUM_CLASSES,)
    np.testing.assert_allclose(model.qhat.numpy(), np.full(NUM_CLASSES, 0.25))

    # Step 0: q_hat_old is uniform (debiasing shifts every logit equally); q_hat moves to
    # m * 1/K + (1 - m) * (the batch's per-class mean of softmax(logits_w)).
    batch = _batch(1)
    weak_logits = numpy_logits(model.online_network, batch[1][0])
    batch_mean = numpy_softmax(weak_logits).mean(axis=0)
    assert np.ptp(batch_mean) > 0.1  # the per-class means differ: a scalar mean would be 1/K
    _, outputs = _step(model, batch)
    expected_qhat = MOMENTUM * 0.25 + (1 - MOMENTUM) * batch_mean
    np.testing.assert_allclose(model.qhat.numpy(), expected_qhat, rtol=1e-5, atol=1e-6)
    assert np.ptp(model.qhat.numpy()) > 0.05  # not the uniform vector USB's bug would keep
    np.testing.assert_array_equal(outputs["pseudo_labels"], np.argmax(weak_logits, axis=-1))

    # Step 1 from a strongly biased q_hat (the class the model predicts most): pseudo-labels
    # from logits - tau log q_hat_old, the loss on logits_s + tau log q_hat_new.
    batch = _batch(2)
    weak_logits = numpy_logits(model.online_network, batch[1][0])
    strong_logits = numpy_logits(model.online_network, batch[1][1])
    labeled_logits = numpy_logits(model.online_network, batch[0][0])
    fixmatch_labels = np.argmax(weak_logits, axis=-1)
    qhat_old = np.full(NUM_CLASSES, 0.05)
    qhat_old[np.bincount(fixmatch_labels, minlength=NUM_CLASSES).argmax()] = 0.85
    model.qhat.assign(qhat_old)
    logs, outputs = _step(model, batch)

    debiased = numpy_softmax(weak_logits - TAU * np.log(qhat_old))
    pseudo_labels = np.argmax(debiased, axis=-1)
    mask = debiased.max(axis=-1) >= THRESHOLD
    qhat_new = MOMENTUM * qhat_old + (1 - MOMENTUM) * numpy_softmax(weak_logits).mean(axis=0)
    per_sample = numpy_cross_entropy(strong_logits + TAU * np.log(qhat_new), pseudo_labels)
    np.testing.assert_array_equal(outputs["pseudo_labels"], pseudo_labels)
    np.testing.assert_array_equal(outputs["linear_pseudo_labels"], fixmatch_labels)
    assert (pseudo_labels != fixmatch_labels).any()  # debiasing changed some FixMatch labels
    np.testing.assert_array_equal(outputs["mask"] > 0, mask)
    assert 0 < mask.sum() < len(mask)
    np.testing.assert_allclose(model.qhat.numpy(), qhat_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["loss_u"], np.sum(per_sample * mask) / len(mask), rtol=1e-4)
    np.testing.assert_allclose(logs["loss_x"], numpy_cross_entropy(labeled_logits, batch[0][1]).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], logs["loss_x"] + logs["loss_u"], rtol=1e-6)


def test_evaluation_and_export_use_raw_ema_logits(tmp_path):
    model = tiny_daso(algorithm="debiaspl")
    model.compile()
    model.qhat.assign([0.7, 0.1, 0.1, 0.1])  # the margin must not reach inference
    images = class_images([0, 1, 2, 3], np.random.default_rng(0))
    raw = model.ema_network.classifier(model.ema_network.features(images, training=False))
    np.testing.assert_allclose(model(images), raw, rtol=1e-6)
    version_dir = model.export(str(tmp_path), model_name="debiaspl")
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(raw), rtol=1e-4, atol=1e-6)
    checkpoint = tf.train.Checkpoint(model=model)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    names = dict(tf.train.list_variables(path))
    assert "model/qhat/.ATTRIBUTES/VARIABLE_VALUE" in names  # q_hat is checkpointed state
    assert model.get_config()["debias_tau"] == 0.4 and model.get_config()["qhat_momentum"] == 0.999
