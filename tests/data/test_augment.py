"""Each RandAugment op against PIL, eagerly, inside Dataset.map and batched in an XLA
tf.function. Tolerance: EXACT (max abs diff 0). Every op replays PIL's arithmetic (integer
LUTs, float32 blend with the product looked up, 16.16 fixed-point affine maps), so any
difference is a bug, including for the nearest-neighbour geometric ops."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from daso_tf.data import augment

BATCH = 36  # each level 1..9 four times, both signs


def _pil_op(image, name, level, negative):
    im = Image.fromarray(image)
    sign = -1 if negative else 1
    factor = level / 10 * 0.9 + 0.05
    shear = sign * level / 10 * 0.3
    ops = {
        "AutoContrast": lambda: ImageOps.autocontrast(im),
        "Brightness": lambda: ImageEnhance.Brightness(im).enhance(factor),
        "Color": lambda: ImageEnhance.Color(im).enhance(factor),
        "Contrast": lambda: ImageEnhance.Contrast(im).enhance(factor),
        "Equalize": lambda: ImageOps.equalize(im),
        "Identity": lambda: im,
        "Posterize": lambda: ImageOps.posterize(im, int(level / 10 * 4) + 4),
        "Rotate": lambda: im.rotate(sign * int(level / 10 * 30)),
        "Sharpness": lambda: ImageEnhance.Sharpness(im).enhance(factor),
        "ShearX": lambda: im.transform(im.size, Image.AFFINE, (1, shear, 0, 0, 1, 0)),
        "ShearY": lambda: im.transform(im.size, Image.AFFINE, (1, 0, 0, shear, 1, 0)),
        "Solarize": lambda: ImageOps.solarize(im, 256 - int(level / 10 * 256)),
        "TranslateX": lambda: im.transform(
            im.size, Image.AFFINE, (1, 0, int(sign * level / 10 * 0.3 * im.size[0]), 0, 1, 0)),
        "TranslateY": lambda: im.transform(
            im.size, Image.AFFINE, (1, 0, 0, 0, 1, int(sign * level / 10 * 0.3 * im.size[1]))),
    }
    return np.asarray(ops[name]())


def _random_images(rng, size):
    images = rng.integers(0, 256, (BATCH, size, size, 3), dtype=np.uint8)
    images[:8] = images[:8] // 4 + 60  # narrow histograms (AutoContrast, Equalize)
    images[8:12] = rng.integers(0, 3, (4, size, size, 3)) * 50  # few grey levels
    images[12] = 77  # constant image: identity LUTs
    return images


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(0)
    images = {32: _random_images(rng, 32), 20: _random_images(rng, 20)}
    levels = np.arange(BATCH) % 9 + 1
    negative = rng.random(BATCH) < 0.5
    return images, levels, negative


def _apply_in_dataset_map(images, ops, levels, negative):
    dataset = tf.data.Dataset.from_tensors((images, ops, levels, negative)).map(
        lambda *args: augment.apply_ops(*args))
    return next(iter(dataset)).numpy()


_apply_xla = tf.function(
    lambda *args: augment.apply_ops(*args, static_shapes=True), jit_compile=True)


@pytest.mark.parametrize("name", augment.OPS)
def test_op_matches_pil_eager_dataset_map_and_xla(cases, name):
    all_images, levels, negative = cases
    ops = np.full([BATCH], augment.OPS.index(name), np.int32)
    for size, images in all_images.items():
        expected = np.stack([_pil_op(images[i], name, levels[i], negative[i])
                             for i in range(BATCH)])
        eager = augment.apply_ops(images, ops, levels, negative).numpy()
        np.testing.assert_array_equal(eager, expected, err_msg=f"{name} eager {size}px")
        mapped = _apply_in_dataset_map(images, ops, levels, negative)
        np.testing.assert_array_equal(mapped, expected, err_msg=f"{name} Dataset.map {size}px")
        if size == 32:
            compiled = _apply_xla(images, ops, levels, negative).numpy()
            np.testing.assert_array_equal(compiled, expected, err_msg=f"{name} XLA")


def test_mixed_ops_per_sample_match_pil(cases):
    images, levels, negative = cases[0][32], cases[1], cases[2]
    ops = np.arange(BATCH) % len(augment.OPS)
    expected = np.stack([_pil_op(images[i], augment.OPS[ops[i]], levels[i], negative[i])
                         for i in range(BATCH)])
    np.testing.assert_array_equal(augment.apply_ops(images, ops, levels, negative), expected)
    np.testing.assert_array_equal(_apply_xla(images, ops, levels, negative), expected)


def test_weak_views_are_flipped_reflect_padded_crops():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
    views = augment.weak_augment(images, tf.constant([3, 4], tf.int64)).numpy()
    assert views.dtype == np.uint8 and views.shape == images.shape
    seen = set()
    for image, view in zip(images, views):
        padded = np.pad(image, [[4, 4], [4, 4], [0, 0]], mode="reflect")
        matches = [(flip, top, left) for flip in (False, True)
                   for top in range(9) for left in range(9)
                   if np.array_equal((padded[:, ::-1] if flip else padded)
                                     [top:top + 12, left:left + 12], view)]
        assert matches, "weak view is not a flip + reflect-pad crop of its image"
        seen.add(matches[0])
    assert len(seen) > 8  # offsets and flips drawn per image


def test_cutout_box_follows_the_reference_formula():
    images = np.zeros([64, 32, 32, 3], np.uint8)
    out = augment.cutout(images, tf.constant([5, 6], tf.int64)).numpy()
    sizes = set()
    for view in out:
        ys, xs = np.nonzero(view[..., 0])
        assert set(np.unique(view)) == {0, 127}
        height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert len(ys) == height * width  # one filled rectangle
        assert height <= 17 and width <= 17
        # Inclusive bounds: 17 wide unless clipped at the right border (x1 = W).
        assert width == 17 or xs.min() == 0 or xs.max() == 31
        sizes.add((height, width))
    assert (17, 17) in sizes


def test_identity_at_probability_zero_and_xla_equals_dynamic():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    seed = tf.constant([7, 8], tf.int64)
    np.testing.assert_array_equal(augment.randaugment(images, seed, prob=0.0), images)
    dynamic = augment.strong_augment(images, seed).numpy()
    compiled = tf.function(lambda x, s: augment.strong_augment(x, s, static_shapes=True),
                           jit_compile=True)(images, seed).numpy()
    np.testing.assert_array_equal(dynamic, compiled)
    assert dynamic.dtype == np.uint8 and dynamic.shape == images.shape


def test_identical_images_get_distinct_strong_views_and_seed_is_deterministic():
    image = np.random.default_rng(4).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    batch = np.repeat(image, 32, axis=0)
    seed = tf.constant([1, 2], tf.int64)
    views = augment.strong_augment(batch, seed).numpy()
    distinct = {view.tobytes() for view in views}
    assert len(distinct) >= 30
    np.testing.assert_array_equal(views, augment.strong_augment(batch, seed))
    assert not np.array_equal(views, augment.strong_augment(batch, tf.constant([1, 3])))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="uint8"):
        augment.weak_augment(np.zeros([2, 8, 8, 3], np.float32), tf.constant([0, 0]))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        augment.weak_augment(np.zeros([2, 8, 8], np.uint8), tf.constant([0, 0]))
