"""PseudoLabel: one weak view, the same logits as target and prediction, a linear ramp-up
over 0.4 x total steps (the reference's pseudo_label.py + pseudolabel.yaml, in NumPy)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def softmax(logits):
    logits = np.asarray(logits, "float64")
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def cross_entropy(logits, labels):
    log_probs = np.log(softmax(logits))
    return -log_probs[np.arange(len(labels)), labels]


def reference_losses(logits_l, y_l, logits_u, threshold, step, total_steps, lambda_u=1.0):
    """pseudo_label.py run_step: CE on the labeled logits, hard pseudo-labels of the unlabeled
    logits themselves, masked sum / B_u, times min(t / (0.4 * MAX_ITER), 1)."""
    probs = softmax(logits_u)
    mask = probs.max(-1) >= threshold
    loss_u = np.sum(mask * cross_entropy(logits_u, probs.argmax(-1))) / len(logits_u)
    ramp = min(step / (0.4 * total_steps), 1.0)
    return cross_entropy(logits_l, y_l).mean(), ramp * lambda_u * loss_u, mask


def test_losses_mask_and_ramp_up_against_the_reference_formulas():
    model = tiny_daso(algorithm="pseudo_label", total_steps=10, lambda_u=2.0)
    assert model.unlabeled_views == ("weak",) and (model.threshold, model.rampup_ratio) == (0.95, 0.4)
    model.online_network.classifier.kernel.assign(model.online_network.classifier.kernel * 8)
    (x_l, y_l), (u_w, u_s, _) = synthetic_batches(1)[0]
    logits = model.online_network(np.concatenate([x_l, u_w]), training=True).numpy()  # one pass, BN over both
    confidence = softmax(logits[len(x_l):]).max(-1)
    model.threshold = float(np.median(confidence))  # some samples pass, some do not
    for step in (0, 2, 3, 4, 9):  # ramp-up over 0.4 * 10 = 4 steps: 0, 0.5, 0.75, 1, 1
        batch = model.unpack_train_batch(((x_l, y_l), (u_w,)))
        losses, outputs = model.forward_and_compute_losses(batch, tf.constant(step, "int64"))
        loss_x, loss_u, mask = reference_losses(logits[:len(x_l)], y_l, logits[len(x_l):], model.threshold,
                                                step, total_steps=10, lambda_u=2.0)
        assert 0 < mask.sum() < len(mask)
        np.testing.assert_array_equal(outputs["mask"], mask)
        np.testing.assert_array_equal(outputs["pseudo_labels"], softmax(logits[len(x_l):]).argmax(-1))
        assert float(losses["loss_x"]) == pytest.approx(loss_x, rel=1e-5)
        assert float(losses["loss_u"]) == pytest.approx(loss_u, rel=1e-5, abs=1e-7)
        assert float(losses["loss"]) == pytest.approx(loss_x + loss_u, rel=1e-5)
    assert float(losses["loss_u"]) > 0
    # the standard (u_w, u_s) layout uses the weak view only
    two_views = model.unpack_train_batch(((x_l, y_l), (u_w, u_s)))
    assert len(two_views["u_views"]) == 1 and two_views["u_views"][0] is two_views["u_w"]


def test_gradient_is_the_cross_entropy_gradient_with_a_constant_target():
    # d loss_u / d W (classifier kernel) = h_u^T [mask * (softmax(z_u) - onehot(argmax z_u))] / B_u:
    # the pseudo-label is a constant target, the prediction carries the gradient.
    model = tiny_daso(algorithm="pseudo_label", total_steps=1, rampup_ratio=0.0)
    model.online_network.classifier.kernel.assign(model.online_network.classifier.kernel * 8)
    (x_l, y_l), (u_w, _, _) = synthetic_batches(1)[0]
    features, logits = model.online_network.features_and_logits(np.concatenate([x_l, u_w]), training=True)
    features_u, logits_u = features.numpy()[len(x_l):], logits.numpy()[len(x_l):]
    probs = softmax(logits_u)
    model.threshold = float(np.median(probs.max(-1)))
    kernel = model.online_network.classifier.kernel
    with tf.GradientTape() as tape:
        losses, outputs = model.forward_and_compute_losses(model.unpack_train_batch(((x_l, y_l), (u_w,))),
                                                           tf.constant(0, "int64"))
    mask = (probs.max(-1) >= model.threshold)[:, None]
    assert 0 < mask.sum() < len(mask)
    expected = features_u.T @ (mask * (probs - np.eye(4)[probs.argmax(-1)])) / len(u_w)
    np.testing.assert_allclose(tape.gradient(losses["loss_u"], kernel), expected, rtol=1e-4, atol=1e-7)


def test_fit_from_one_view_batches_and_export(tmp_path):
    model = tiny_daso(algorithm="pseudo_label", total_steps=4)
    model.compile()
    batches = synthetic_batches(3)
    one_view = tf.data.Dataset.from_tensor_slices((
        (np.stack([b[0][0] for b in batches]), np.stack([b[0][1] for b in batches])),
        (np.stack([b[1][0] for b in batches]), np.stack([b[1][2] for b in batches]))))  # (u_w, u_true)
    history = model.fit(one_view, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and int(model.step.numpy()) == 3
    assert 0 <= model.pseudo_label_diagnostics()["mask_rate"] <= 1  # u_true told apart from the view
    model.fit(as_dataset(batches), epochs=1, verbose=0)  # the standard layout trains too
    version_dir = model.export(tmp_path / "serving", model_name="pseudo_label")
    images = batches[0][0][0]
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(model(images)), rtol=1e-5, atol=1e-6)
