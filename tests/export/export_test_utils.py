"""Helpers shared by the export tests (a uniquely named module: tests/ has no packages)."""

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

IMAGE_SIZE = (32, 32)
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
MODEL_NAME = "daso"


def build_stand_in_network(num_classes=len(CLASS_NAMES), seed=0):
    """Pixels (0..255) -> logits, normalisation inside: the contract of `ema_network`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*IMAGE_SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # A wide random head so that different images get different classes.
    head = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0))
    logits = head(x)
    return keras.Model(inputs, logits, name="stand_in_network")


def keras_probabilities(network, pixels):
    """Softmax of the Keras network on float pixels at the training size, float64."""
    logits = network(np.asarray(pixels, np.float32), training=False)
    return tf.nn.softmax(tf.cast(logits, tf.float64), axis=-1).numpy()


def random_images(count, height=IMAGE_SIZE[0], width=IMAGE_SIZE[1], seed=0):
    """uint8 images with a per-image colour cast (so their classes differ) plus noise."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 256, (count, 1, 1, 3))
    noise = rng.integers(-60, 61, (count, height, width, 3))
    return np.clip(tint + noise, 0, 255).astype(np.uint8)


def pil_resize(images, size=IMAGE_SIZE):
    """PIL's bilinear resize of uint8 images [N, H, W, 3] to size (height, width): what the
    serving signatures (and the evaluation pipeline) claim to compute, built independently."""
    height, width = size
    return np.stack([np.asarray(Image.fromarray(np.asarray(image)).resize((width, height), Image.BILINEAR))
                     for image in images])
