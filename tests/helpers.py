"""Small builders shared by tests: tiny models and synthetic, learnable batches."""

import keras
import numpy as np
import tensorflow as tf

import daso_tf

TINY_SHAPE = (16, 16, 3)


def tiny_daso(num_classes=4, algorithm="daso", sync_bn=False, **kwargs):
    """A WRN-10-1 DASO model small enough for CPU tests."""
    defaults = dict(normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
                    labeled_class_counts=[8 // (2 ** k) or 1 for k in range(num_classes)])
    if algorithm == "daso":
        defaults.update(warmup_steps=2, queue_size=8, histogram_period=2, threshold=0.5)
    defaults.update(kwargs)
    backbone = daso_tf.WideResNet(10, 1, synchronized_batch_norm=sync_bn)
    model = daso_tf.get_algorithm(algorithm)(backbone, num_classes, **defaults)
    model.build((None,) + TINY_SHAPE)
    return model


def dense_backbone(shape=TINY_SHAPE, feature_dim=8, seed=0):
    """images -> flatten -> Dense: a backbone without BatchNorm, so that NumPy can recompute
    a learner's logits exactly (``numpy_logits``)."""
    images = keras.Input(shape=shape)
    features = keras.layers.Dense(feature_dim, kernel_initializer=keras.initializers.RandomNormal(
        stddev=0.05, seed=seed), name="dense")(keras.layers.Flatten()(images))
    return keras.Model(images, features, name="dense_backbone")


def numpy_logits(network, images, head="classifier"):
    """The logits of ``network`` (a ClassifierNetwork on ``dense_backbone``) in float64 NumPy."""
    mean, std = (np.asarray(v, "float64") for v in network.normalization)
    x = (np.asarray(images, "float64") / 255.0 - mean) / std
    kernel, bias = (np.asarray(w.numpy(), "float64") for w in network.backbone.get_layer("dense").weights)
    features = x.reshape(len(x), -1) @ kernel + bias
    head_kernel, head_bias = (np.asarray(w.numpy(), "float64") for w in network.head(head).weights)
    return features @ head_kernel + head_bias


def numpy_softmax(logits):
    logits = np.asarray(logits, "float64")
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_cross_entropy(logits, labels):
    """Per-sample CE(logits_i, labels_i)."""
    logits = np.asarray(logits, "float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -log_probs[np.arange(len(labels)), np.asarray(labels)]


def class_images(labels, rng, shape=TINY_SHAPE, num_classes=4):
    """uint8 images whose colour encodes the class (learnable), plus noise."""
    labels = np.asarray(labels)
    hues = np.linspace(30, 225, num_classes)
    base = np.zeros((len(labels),) + shape, np.float32)
    for channel in range(3):
        base[..., channel] = np.roll(hues, channel)[labels][:, None, None]
    noisy = base + rng.normal(0, 25, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def synthetic_batches(num_steps, labeled=4, unlabeled=8, num_classes=4, seed=0, long_tailed=True):
    """A fixed list of training batches ((x_l, y_l), (u_w, u_s, u_true)) as numpy arrays."""
    rng = np.random.default_rng(seed)
    prior = np.array([2.0 ** -k for k in range(num_classes)]) if long_tailed else np.ones(num_classes)
    prior = prior / prior.sum()
    batches = []
    for _ in range(num_steps):
        y_l = rng.choice(num_classes, labeled, p=prior).astype(np.int32)
        u_y = rng.choice(num_classes, unlabeled, p=prior).astype(np.int32)
        u_w = class_images(u_y, rng, num_classes=num_classes)
        u_s = np.clip(u_w.astype(np.int16) + rng.integers(-40, 40, u_w.shape), 0, 255).astype(np.uint8)
        batches.append(((class_images(y_l, rng, num_classes=num_classes), y_l), (u_w, u_s, u_y)))
    return batches


def as_dataset(batches, with_true_labels=False):
    def gen():
        for (x_l, y_l), (u_w, u_s, u_y) in batches:
            yield ((x_l, y_l), (u_w, u_s, u_y) if with_true_labels else (u_w, u_s))
    first = batches[0]
    spec_l = (tf.TensorSpec(first[0][0].shape, tf.uint8), tf.TensorSpec(first[0][1].shape, tf.int32))
    spec_u = [tf.TensorSpec(first[1][0].shape, tf.uint8), tf.TensorSpec(first[1][1].shape, tf.uint8)]
    if with_true_labels:
        spec_u.append(tf.TensorSpec(first[1][2].shape, tf.int32))
    return tf.data.Dataset.from_generator(gen, output_signature=(spec_l, tuple(spec_u)))


def model_state(model):
    """Every variable of the model and its optimiser, by position and name, as numpy.

    (Layer-name prefixes are dropped: a second model in the same process gets uniquified
    names such as ``daso_1``.)
    """
    state = {f"model/{i}/{v.name}": np.array(v.numpy()) for i, v in enumerate(model.weights)}
    if model.optimizer is not None and model.optimizer.built:
        state.update({f"optimizer/{i}": np.array(v.numpy())
                      for i, v in enumerate(model.optimizer.variables)})
    return state
