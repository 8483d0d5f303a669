"""Sharpening, MixUp, rotations and the linear ramp-up against hand-computed values."""

import keras
import numpy as np
import pytest

from daso_tf.algorithms.mixing import (mixup, mixup_lambda, random_permutation, rotate_images,
                                       sharpen, soft_cross_entropy)
from daso_tf.algorithms.ramps import linear_rampup


def test_sharpen_hand_values():
    # [0.6, 0.4] ** 2 = [0.36, 0.16] -> / 0.52
    np.testing.assert_allclose(sharpen(np.array([[0.6, 0.4]]), 0.5), [[0.36 / 0.52, 0.16 / 0.52]], rtol=1e-6)
    np.testing.assert_allclose(sharpen(np.array([[0.25, 0.75]]), 1.0), [[0.25, 0.75]], rtol=1e-6)


def test_mixup_hand_values():
    images = np.array([0.0, 10.0]).reshape(2, 1, 1, 1)
    targets = np.eye(2)
    mixed_x, mixed_y = mixup(images, targets, 0.7, np.array([1, 0]))
    np.testing.assert_allclose(np.ravel(mixed_x), [3.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose(mixed_y, [[0.7, 0.3], [0.3, 0.7]], rtol=1e-6)


def test_mixup_lambda_keeps_the_first_input_dominant_and_is_seeded():
    draws = [float(mixup_lambda(0.75, keras.random.SeedGenerator(s))) for s in range(40)]
    assert min(draws) >= 0.5 and max(draws) <= 1.0 and len(set(draws)) > 30
    assert float(mixup_lambda(0.75, keras.random.SeedGenerator(3))) == draws[3]
    permutation = np.array(random_permutation(9, keras.random.SeedGenerator(0)))
    assert sorted(permutation) == list(range(9))


def test_rotations_match_numpy_rot90():
    images = np.arange(2 * 3 * 3 * 2, dtype="float32").reshape(2, 3, 3, 2)
    for k in range(4):
        got = np.array(rotate_images(images, np.array([k, (k + 1) % 4])))
        np.testing.assert_array_equal(got[0], np.rot90(images[0], k, axes=(0, 1)))
        np.testing.assert_array_equal(got[1], np.rot90(images[1], (k + 1) % 4, axes=(0, 1)))


def test_soft_cross_entropy_and_ramp():
    # uniform logits: -sum_k t_k log(1/2) = log 2 for any target
    assert float(soft_cross_entropy(np.zeros((2, 2)), np.array([[1.0, 0.0], [0.3, 0.7]]))) == pytest.approx(np.log(2))
    assert [float(linear_rampup(t, 4000)) for t in (0, 1000, 4000, 9000)] == [0.0, 0.25, 1.0, 1.0]
    assert float(linear_rampup(5, 0)) == 1.0
