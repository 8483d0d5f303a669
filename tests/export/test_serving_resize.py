"""Serving resizes like evaluation: a 96 px (STL-10) or 64 px image is served with the
probabilities ``model.predict`` gives on the evaluation pipeline's image.

The expected resized images are built with PIL directly (what the pipeline claims to
match, and what the reference's torchvision Resize does), not with the resize under test.
A control shows the check would catch the old non-antialiased ``tf.image.resize``.
"""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import daso_tf
from export_test_utils import pil_resize
from daso_tf.data import eval_stream
from export import BYTES_SIGNATURE, SERVING_SIGNATURE

TRAIN_SIZE, NUM_CLASSES = 32, 5


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """A DASO learner (WRN-10-1 at 32 px) with a sharp random head, exported for serving."""
    keras.utils.set_random_seed(4)
    model = daso_tf.DASO(daso_tf.WideResNet(10, 1), NUM_CLASSES,
                         normalization=((0.45, 0.45, 0.45), (0.25, 0.25, 0.25)),
                         class_names=[f"c{k}" for k in range(NUM_CLASSES)])
    model.build((None, TRAIN_SIZE, TRAIN_SIZE, 3))
    head = model.ema_network.classifier
    # Scaled-up logits: probabilities that move visibly when the input pixels move.
    head.kernel.assign(head.kernel * 4.0)
    version_dir = model.export(tmp_path_factory.mktemp("serving"), model_name="stl")
    return model, tf.saved_model.load(version_dir).signatures


def _predict_probabilities(model, images):
    logits = model.predict(images, batch_size=len(images), verbose=0)
    return tf.nn.softmax(tf.cast(logits, tf.float64), axis=-1).numpy()


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [96, 64])
def test_served_probabilities_equal_predict_on_evaluation_images(served_model, size):
    model, signatures = served_model
    rng = np.random.default_rng(size)
    # Smooth colour fields plus fine noise: antialiasing matters for the noise.
    tint = rng.integers(30, 226, (6, 1, 1, 3))
    images = np.clip(tint + rng.integers(-70, 71, (6, size, size, 3)), 0, 255).astype(np.uint8)
    labels = np.zeros([len(images)], np.int64)

    expected_pixels = pil_resize(images, (TRAIN_SIZE, TRAIN_SIZE))
    evaluated = np.concatenate([x.numpy() for x, _ in eval_stream(
        images, labels, batch_size=4, output_size=TRAIN_SIZE)])
    np.testing.assert_array_equal(evaluated, expected_pixels)  # the evaluation pipeline's images
    expected = _predict_probabilities(model, expected_pixels)

    served = signatures[SERVING_SIGNATURE](images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(served["class_ids"].numpy(), expected.argmax(-1))
    from_bytes = signatures[BYTES_SIGNATURE](image_bytes=tf.constant([_png(i) for i in images]))
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(), expected, atol=1e-5)

    # Control: the non-antialiased resize serving used before gives other probabilities.
    plain = tf.image.resize(images, (TRAIN_SIZE, TRAIN_SIZE), method="bilinear").numpy()
    assert np.abs(_predict_probabilities(model, plain) - expected).max() > 1e-3
