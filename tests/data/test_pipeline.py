import numpy as np
import pytest
import tensorflow as tf

from daso_tf.data import LongTailedData, eval_stream, train_stream


def _indexed_data(num_labeled=13, num_unlabeled=29, size=32):
    """Constant images whose colour encodes their index: flips/crops keep them constant, so
    a weak view tells which example it came from."""
    def images(count, base):
        values = (np.arange(count) + base).astype(np.uint8)
        return np.broadcast_to(values[:, None, None, None], (count, size, size, 3)).copy()

    labeled_labels = np.arange(num_labeled) % 3
    unlabeled_labels = np.arange(num_unlabeled) % 3
    empty = images(0, 0)
    return LongTailedData(images(num_labeled, 0), labeled_labels, images(num_unlabeled, 100),
                          unlabeled_labels, empty, labeled_labels[:0], empty,
                          labeled_labels[:0], ["a", "b", "c"], [5, 4, 4], [10, 10, 9],
                          [0, 0, 0])


def _take(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for _, b in zip(range(count), dataset)]


def test_batches_shapes_labels_and_epoch_coverage():
    data = _indexed_data()
    batches = _take(train_stream(data, labeled_batch_size=4, unlabeled_ratio=2, seed=5,
                                 with_unlabeled_labels=True), 13)
    (x_l, y_l), (u_w, u_s, u_true) = batches[0]
    assert x_l.shape == (4, 32, 32, 3) and x_l.dtype == np.uint8 and y_l.dtype == np.int32
    assert u_w.shape == u_s.shape == (8, 32, 32, 3) and u_true.dtype == np.int32
    labeled_seen, unlabeled_seen = [], []
    for (x_l, y_l), (u_w, _, u_true) in batches:
        index = x_l[:, 0, 0, 0].astype(int)  # constant images survive flip + crop
        np.testing.assert_array_equal(y_l, data.labeled_labels[index])
        unlabeled_index = u_w[:, 16, 16, 0].astype(int) - 100
        np.testing.assert_array_equal(u_true, data.unlabeled_labels[unlabeled_index])
        labeled_seen.extend(index)
        unlabeled_seen.extend(unlabeled_index)
    # 13 steps x 4 = 52 = 4 epochs of 13: every epoch is a permutation.
    for epoch in range(4):
        assert sorted(labeled_seen[epoch * 13:(epoch + 1) * 13]) == list(range(13))
    assert sorted(unlabeled_seen[:29]) == list(range(29))
    assert labeled_seen[:13] != labeled_seen[13:26]  # reshuffled each epoch


def test_resume_reproduces_the_uninterrupted_stream_and_seed_matters():
    rng = np.random.default_rng(0)
    data = _indexed_data()
    data.labeled_images = rng.integers(0, 256, data.labeled_images.shape, np.uint8)
    data.unlabeled_images = rng.integers(0, 256, data.unlabeled_images.shape, np.uint8)
    full = _take(train_stream(data, labeled_batch_size=4, unlabeled_ratio=2, seed=1), 9)
    resumed = _take(train_stream(data, labeled_batch_size=4, unlabeled_ratio=2, seed=1,
                                 start_step=6), 3)
    for a, b in zip(full[6:], resumed):
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            np.testing.assert_array_equal(x, y)
    other = _take(train_stream(data, labeled_batch_size=4, unlabeled_ratio=2, seed=2), 1)
    assert not np.array_equal(full[0][1][1], other[0][1][1])
    # the strong view is not the weak view
    assert not np.array_equal(full[0][1][0], full[0][1][1])


def test_stl_style_images_are_augmented_at_96_and_resized_to_32():
    # The reference: flip + 4-px reflect crop (weak) and RandAugment + Cutout 16 px (strong)
    # on the 96 px image, THEN PIL's bilinear resize to 32. Expected: PIL's resize of the
    # 96 px augmentations (themselves tested against PIL in test_augment.py).
    from PIL import Image

    from daso_tf.data import augment, pipeline

    data = _indexed_data(num_labeled=4, num_unlabeled=4, size=96)
    rng = np.random.default_rng(4)
    data.labeled_images = rng.integers(0, 256, data.labeled_images.shape, np.uint8)
    data.unlabeled_images = rng.integers(0, 256, data.unlabeled_images.shape, np.uint8)
    common = dict(labeled_batch_size=2, unlabeled_ratio=1, seed=0, start_step=3)
    (x_l, _), (u_w, u_s) = _take(train_stream(data, **common), 1)[0]
    (raw_x, _), (raw_u,) = _take(train_stream(data, augment_on_device=True, **common), 1)[0]
    assert raw_x.shape == (2, 96, 96, 3) and x_l.shape == u_w.shape == u_s.shape == (2, 32, 32, 3)
    keys = pipeline.augmentation_keys(0, 3)

    def pil_32(images):
        return np.stack([np.asarray(Image.fromarray(i).resize((32, 32), Image.BILINEAR))
                         for i in np.asarray(images)])

    np.testing.assert_array_equal(x_l, pil_32(augment.weak_augment(raw_x, keys[0])))
    np.testing.assert_array_equal(u_w, pil_32(augment.weak_augment(raw_u, keys[1])))
    np.testing.assert_array_equal(u_s, pil_32(augment.strong_augment(raw_u, keys[2])))


@pytest.mark.parametrize("augmentation", ["keras_cv", "keras"])
def test_keras_alternatives_produce_strong_views(augmentation):
    rng = np.random.default_rng(1)
    data = _indexed_data(num_labeled=4, num_unlabeled=4)
    data.unlabeled_images = rng.integers(0, 256, data.unlabeled_images.shape, np.uint8)
    (_, _), (u_w, u_s) = _take(train_stream(data, labeled_batch_size=2, unlabeled_ratio=2,
                                            seed=0, augmentation=augmentation), 1)[0]
    assert u_s.shape == (4, 32, 32, 3) and u_s.dtype == np.uint8


def test_unknown_augmentation_and_bad_batch_raise():
    with pytest.raises(ValueError, match="augmentation 'autoaugment'"):
        train_stream(_indexed_data(), labeled_batch_size=2, unlabeled_ratio=1, seed=0,
                     augmentation="autoaugment")
    with pytest.raises(ValueError, match="labeled_batch_size"):
        train_stream(_indexed_data(), labeled_batch_size=0, unlabeled_ratio=1, seed=0)


def test_eval_stream_is_ordered_unaugmented_and_resized():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 32, 32, 3), np.uint8)
    labels = np.arange(10)
    batches = list(eval_stream(images, labels, batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    assert batches[0][1].dtype == tf.int32
    big = rng.integers(0, 256, (3, 96, 96, 3), np.uint8)
    resized = next(iter(eval_stream(big, labels[:3], batch_size=8)))[0].numpy()
    from PIL import Image

    expected = np.stack([np.asarray(Image.fromarray(i).resize((32, 32), Image.BILINEAR)) for i in big])
    np.testing.assert_array_equal(resized, expected)


def test_learners_can_ask_for_other_unlabeled_views():
    data = _indexed_data()
    common = dict(labeled_batch_size=4, unlabeled_ratio=2, seed=3)
    default = _take(train_stream(data, **common), 2)
    explicit = _take(train_stream(data, unlabeled_views=("weak", "strong"), **common), 2)
    for a, b in zip(tf.nest.flatten(default), tf.nest.flatten(explicit)):
        np.testing.assert_array_equal(a, b)
    (x_l, y_l), views = _take(train_stream(data, unlabeled_views=("weak", "strong", "strong"),
                                           with_unlabeled_labels=True, **common), 1)[0]
    assert len(views) == 4 and views[3].shape == (8,)
    weak, strong_1, strong_2 = views[:3]
    assert weak.shape == strong_1.shape == strong_2.shape == (8, 32, 32, 3)
    assert not np.array_equal(strong_1, strong_2)  # each view draws its own augmentation
    # Constant images are unchanged by flips and crops: use random ones to see two weak views differ.
    data.unlabeled_images = np.random.default_rng(0).integers(0, 256, data.unlabeled_images.shape, np.uint8)
    (_, _), two_weak = _take(train_stream(data, unlabeled_views=("weak", "weak"), **common), 1)[0]
    assert not np.array_equal(two_weak[0], two_weak[1])
    with pytest.raises(ValueError, match="unlabeled_views"):
        train_stream(data, unlabeled_views=("weak", "medium"), **common)
