import numpy as np
import pytest
import tensorflow as tf

from daso_tf.data import LongTailedData, class_aware_weights, eval_stream, train_stream


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


def test_identity_view_is_the_image_only_resized():
    from PIL import Image

    rng = np.random.default_rng(4)
    data = _indexed_data(num_labeled=6, num_unlabeled=10)
    # channel 0 tells the image's index (100 + i); the other channels are random content
    data.unlabeled_images[..., 1:] = rng.integers(0, 256, data.unlabeled_images[..., 1:].shape, np.uint8)
    views = ("identity", "weak", "strong")
    (_, _), (u_id, u_w, u_s) = _take(train_stream(data, labeled_batch_size=2, unlabeled_ratio=5, seed=0,
                                                  unlabeled_views=views), 1)[0]
    index = u_id[:, 0, 0, 0].astype(int) - 100
    assert len(set(index)) == 10
    np.testing.assert_array_equal(u_id, data.unlabeled_images[index])
    assert not np.array_equal(u_w, u_id) and not np.array_equal(u_s, u_id)
    # STL-10-style 96 px images: the identity view is PIL's bilinear resize to 32 px
    data = _indexed_data(num_labeled=4, num_unlabeled=4, size=96)
    data.unlabeled_images = rng.integers(0, 256, data.unlabeled_images.shape, np.uint8)
    data.unlabeled_labels = np.arange(4)
    (_, _), (u_id, _, _, u_true) = _take(train_stream(data, labeled_batch_size=2, unlabeled_ratio=2, seed=0,
                                                      unlabeled_views=views, with_unlabeled_labels=True), 1)[0]
    expected = [np.asarray(Image.fromarray(data.unlabeled_images[i]).resize((32, 32), Image.BILINEAR))
                for i in u_true]
    np.testing.assert_array_equal(u_id, np.stack(expected))


def test_class_aware_weights_are_the_reference_formula():
    counts = [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]  # CIFAR-10-LT, N1 = 1500, gamma = 100
    weights = class_aware_weights(counts, 0.999)
    n = np.array(counts, dtype=np.float64)
    np.testing.assert_allclose(weights, 0.001 / (1.0 - 0.999 ** n), rtol=1e-12)
    # class shares are n_c * w_c: 1500 * 0.001 / (1 - 0.999^1500) = 1.9304, 15 * 0.001 / (1 - 0.999^15) = 1.0070
    share = n * weights
    assert share[0] == pytest.approx(1.9304, abs=1e-4) and share[-1] == pytest.approx(1.0070, abs=1e-4)
    assert share[0] / share[-1] == pytest.approx(1.917, abs=1e-3)  # head : tail about 1.9 : 1
    np.testing.assert_allclose(class_aware_weights(counts, 1.0), 1.0 / n)  # exactly balanced
    np.testing.assert_allclose(class_aware_weights(counts, 0.0), np.ones(10))  # instance-balanced
    with pytest.raises(ValueError, match="beta"):
        class_aware_weights(counts, 1.5)


def test_class_aware_labeled_sampling_draws_with_replacement_in_proportion():
    data = _indexed_data(num_labeled=15, num_unlabeled=4, size=8)
    data.labeled_labels = (np.arange(15) >= 12).astype(np.int64)  # 12 images of class 0, 3 of class 1
    common = dict(labeled_batch_size=15, unlabeled_ratio=1, seed=7, output_size=8, unlabeled_views=("identity",))
    batches = _take(train_stream(data, class_aware_beta=0.9, **common), 120)
    index = np.stack([x_l[:, 0, 0, 0] for (x_l, _), _ in batches]).astype(int)  # one epoch per batch
    labels = np.stack([y_l for (_, y_l), _ in batches])
    np.testing.assert_array_equal(labels, data.labeled_labels[index])
    # beta 0.9: class shares 12 * 0.1 / (1 - 0.9^12) : 3 * 0.1 / (1 - 0.9^3) = 1.6723 : 1.1070
    expected = 1.6723 / (1.6723 + 1.1070)
    assert np.mean(labels == 0) == pytest.approx(expected, abs=0.04)  # 1800 draws: 4 standard deviations
    # with replacement: some epochs repeat images; within a class every image is equally likely
    assert any(len(set(row)) < 15 for row in index)
    counts = np.bincount(index.ravel(), minlength=15)
    assert counts[:12].min() > 0.6 * counts[:12].mean() and counts[12:].min() > 0.6 * counts[12:].mean()
    # instance-balanced sampling: class 0 holds 12 / 15 of the draws
    balanced = _take(train_stream(data, class_aware_beta=0.0, **common), 60)
    assert np.mean([np.mean(y == 0) for (_, y), _ in balanced]) == pytest.approx(0.8, abs=0.05)
    # batch k is a pure function of (seed, k): a resumed stream draws the same images
    resumed = _take(train_stream(data, class_aware_beta=0.9, start_step=100, **common), 3)
    for a, b in zip(batches[100:], resumed):
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            np.testing.assert_array_equal(x, y)
