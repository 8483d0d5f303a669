"""cRT: a fresh classifier on a frozen encoder whose BatchNorm stays in training mode, the
encoder loaded from another learner's checkpoint (online, not EMA), the online network
evaluated, the reference's constant-LR SGD."""

import numpy as np
import pytest
import tensorflow as tf

import daso_tf
from tests.helpers import as_dataset, model_state, synthetic_batches, tiny_daso


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def is_batch_norm_statistic(name):
    return "moving_mean" in name or "moving_variance" in name


@pytest.fixture(scope="module")
def trained_fixmatch(tmp_path_factory):
    """A FixMatch model after 2 steps (online and EMA encoders differ) and its training checkpoint."""
    model = tiny_daso(algorithm="fixmatch", threshold=0.5)
    model.compile()
    model.fit(as_dataset(synthetic_batches(2, seed=5)), epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(
        str(tmp_path_factory.mktemp("fixmatch") / "ckpt"))
    return model, path


def test_encoder_comes_from_the_online_network_of_the_checkpoint(trained_fixmatch):
    fixmatch, path = trained_fixmatch
    model = tiny_daso(algorithm="crt")
    classifier = [w.numpy() for w in model.online_network.classifier.weights]
    model.load_encoder(path)
    source = fixmatch.online_network.backbone.weights
    for network in (model.online_network, model.ema_network):
        for weight, expected in zip(network.backbone.weights, source):
            np.testing.assert_array_equal(weight.numpy(), expected.numpy(), err_msg=weight.path)
    differs = [not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(fixmatch.ema_network.backbone.weights, source)]
    assert any(differs)  # the EMA encoder is another one: the online one was loaded
    for weight, before in zip(model.online_network.classifier.weights, classifier):
        np.testing.assert_array_equal(weight.numpy(), before)  # the classifier stays fresh
    copied = tiny_daso(algorithm="crt")
    copied.copy_encoder(fixmatch)
    for a, b in zip(copied.ema_network.backbone.weights, source):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    wider = daso_tf.CRT(daso_tf.WideResNet(10, 2), 4, normalization=fixmatch.normalization)
    wider.build((None, 16, 16, 3))
    with pytest.raises(ValueError, match="does not hold this model's encoder|shape"):
        wider.load_encoder(path)


def test_frozen_encoder_with_training_mode_batch_norm_and_a_moving_classifier(trained_fixmatch):
    fixmatch, _ = trained_fixmatch
    model = tiny_daso(algorithm="crt")
    model.copy_encoder(fixmatch)
    model.compile()
    assert model.optimizer.get_config()["learning_rate"] == 0.03 and model.optimizer.l2 == 5e-4
    assert [w.path for w in model.trainable_variables] == [w.path for w in model.online_network.classifier.weights]
    (x_l, y_l), unlabeled = synthetic_batches(1, seed=9)[0]
    # the loss uses batch statistics (training-mode BatchNorm), not the moving averages
    features = model.online_network.features(x_l, training=True).numpy()
    kernel, bias = (w.numpy() for w in model.online_network.classifier.weights)
    logits = features @ kernel + bias
    expected = -np.log(softmax(logits)[np.arange(len(y_l)), y_l]).mean()
    inference = model.online_network.features(x_l, training=False).numpy() @ kernel + bias
    assert not np.allclose(inference, logits, atol=1e-3)
    before = {w.path: w.numpy() for w in model.online_network.weights}
    logs, _ = tf.function(model.train_step_with_outputs)(((x_l, y_l), unlabeled))
    assert float(logs["loss_x"]) == pytest.approx(expected, rel=1e-5)
    for weight in model.online_network.weights:
        changed = not np.array_equal(weight.numpy(), before[weight.path])
        if "classifier" in weight.path or is_batch_norm_statistic(weight.path):
            assert changed, weight.path  # the classifier learns; BatchNorm statistics keep updating
        else:
            assert not changed, weight.path  # frozen: no gradient, no weight decay
    # the plain SGD step of the classifier: w - lr * (grad + l2 * w), first step without momentum history
    probs = softmax(logits)
    probs[np.arange(len(y_l)), y_l] -= 1.0
    grad_kernel = features.T @ probs / len(y_l)
    updated = model.online_network.classifier.kernel.numpy()
    step = -(updated - kernel) / 0.03
    # Nesterov: the first update is lr * (1 + momentum) * g with g = grad + l2 * w
    np.testing.assert_allclose(step, 1.9 * (grad_kernel + 5e-4 * kernel), rtol=1e-3, atol=1e-6)
    # ema_decay 0: evaluation, prediction and export see the online network
    np.testing.assert_array_equal(model(x_l).numpy(), model.online_network(x_l, training=False).numpy())


def test_fit_save_and_export(tmp_path, trained_fixmatch):
    import keras

    model = tiny_daso(algorithm="crt", base_run="runs/somewhere")
    model.copy_encoder(trained_fixmatch[0])
    model.compile()
    history = model.fit(as_dataset(synthetic_batches(2)), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and int(model.step.numpy()) == 2
    config = model.get_config()
    assert (config["sampler_beta"], config["base_run"], config["ema_decay"]) == (0.999, "runs/somewhere", 0.0)
    path = tmp_path / "crt.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert len(loaded.trainable_variables) == 2  # still frozen after loading
    for key, value in model_state(model).items():
        if key.startswith("model/"):
            np.testing.assert_array_equal(model_state(loaded)[key], value, err_msg=key)
    version_dir = model.export(tmp_path / "serving", model_name="crt")
    images = synthetic_batches(1)[0][0][0]
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"](images=tf.constant(images))
    online = tf.nn.softmax(model.online_network(images, training=False))
    np.testing.assert_allclose(served["probabilities"], online, rtol=1e-5, atol=1e-6)
