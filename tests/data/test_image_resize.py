"""resize_images against PIL's ``Image.resize(..., BILINEAR)``: EXACT (max abs diff 0), for
static and run-time shapes, under XLA, down and up, square and not. The expectation is
always PIL itself (the implementation claims to replay it)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from daso_tf.data.image_resize import resize_images


def _pil(images, height, width):
    return np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
                     for image in images])


@pytest.mark.parametrize("in_size, out_size", [
    ((96, 96), (32, 32)),    # STL-10: trained at 32
    ((64, 64), (32, 32)),
    ((50, 40), (32, 32)),    # non-integer factors
    ((45, 27), (32, 32)),    # down in one dimension, up in the other
    ((33, 31), (32, 32)),
    ((20, 48), (32, 32)),
    ((700, 1000), (32, 32)),  # large factor: wide filter support
    ((30, 30), (45, 60)),    # upscaling
    ((96, 96), (40, 24)),
])
def test_matches_pil_static_dynamic_and_xla(in_size, out_size):
    images = np.random.default_rng(sum(in_size)).integers(0, 256, (2, *in_size, 3), np.uint8)
    expected = _pil(images, *out_size)
    np.testing.assert_array_equal(resize_images(images, out_size), expected)
    dynamic = tf.function(lambda x: resize_images(x, out_size),
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    np.testing.assert_array_equal(dynamic(images), expected)
    xla = tf.function(lambda x: resize_images(x, out_size), jit_compile=True)
    np.testing.assert_array_equal(xla(images), expected)


def test_random_sizes_through_one_run_time_shaped_graph():
    # One traced graph (as in the serving signature) serves every input size.
    rng = np.random.default_rng(7)
    resize = tf.function(lambda x: resize_images(x, (32, 24)),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    for _ in range(25):
        height, width = (int(v) for v in rng.integers(5, 140, 2))
        image = rng.integers(0, 256, (1, height, width, 3), np.uint8)
        np.testing.assert_array_equal(resize(image), _pil(image, 32, 24), err_msg=f"{height}x{width}")


def test_same_size_is_the_identity_and_int_size_means_square():
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), np.uint8)
    np.testing.assert_array_equal(resize_images(images, 32), images)
    dynamic = tf.function(lambda x: resize_images(x, 32),
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    np.testing.assert_array_equal(dynamic(images), images)  # computed, and exact


def test_bad_inputs():
    with pytest.raises(TypeError, match="uint8"):
        resize_images(np.zeros([1, 8, 8, 3], np.float32), 4)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        resize_images(np.zeros([8, 8, 3], np.uint8), 4)
    with pytest.raises(ValueError, match="positive"):
        resize_images(np.zeros([1, 8, 8, 3], np.uint8), (0, 4))
