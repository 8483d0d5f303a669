import numpy as np
import pytest

from daso_tf.data import SourceArrays, class_counts, make_long_tailed_data


def _source(num_classes, per_class, test_per_class=2, unlabeled=None):
    labels = np.repeat(np.arange(num_classes), per_class)
    # 1x1 images whose value is the example index mod 256 keep the test light.
    images = (np.arange(len(labels)) % 256).astype(np.uint8)[:, None, None, None].repeat(3, -1)
    test_labels = np.repeat(np.arange(num_classes), test_per_class)
    return SourceArrays(images, labels, images[:len(test_labels)], test_labels, unlabeled,
                        [f"class{k}" for k in range(num_classes)])


# (classes, per class in train, valid/class, N1, M1, gamma_l, gamma_u, reversed): paper settings
PAPER_SETTINGS = [
    (10, 5000, 500, 1500, 3000, 100, 100, False),
    (10, 5000, 500, 500, 4000, 100, 100, False),
    (10, 5000, 500, 1500, 3000, 100, 1, False),
    (10, 5000, 500, 500, 4000, 100, 100, True),
    (10, 5000, 500, 1500, 3000, 150, 150, False),
    (100, 500, 50, 50, 400, 10, 10, False),
    (100, 500, 50, 150, 300, 10, 10, False),
]


@pytest.mark.parametrize("setting", PAPER_SETTINGS)
def test_per_class_counts_for_paper_settings(setting):
    classes, per_class, valid, n1, m1, gamma_l, gamma_u, reverse = setting
    data = make_long_tailed_data(
        _source(classes, per_class), num_valid_per_class=valid, num_labeled_head=n1,
        num_unlabeled_head=m1, imbalance_labeled=gamma_l, imbalance_unlabeled=gamma_u,
        reverse_unlabeled=reverse, seed=0)
    assert data.labeled_counts == class_counts(n1, gamma_l, classes)
    expected_unlabeled = class_counts(m1, gamma_u, classes, reverse=reverse and gamma_u > 1)
    assert data.unlabeled_counts == expected_unlabeled
    assert data.valid_counts == [valid] * classes
    assert np.bincount(data.labeled_labels, minlength=classes).tolist() == data.labeled_counts
    assert len(data.unlabeled_images) == sum(expected_unlabeled)
    assert data.labeled_images.dtype == np.uint8


@pytest.mark.parametrize("whole_split", [-1, None])
def test_stl_style_extra_unlabeled_set_and_summary(whole_split):
    # STL-10: 500 train images per class, 50 of them for validation, N1=450 gamma_l=10; the
    # extra unlabeled split is used whole (-1, as the stl10 experiments pass it).
    extra = np.zeros([7, 1, 1, 3], np.uint8)
    data = make_long_tailed_data(
        _source(10, 500, unlabeled=extra), num_valid_per_class=50, num_labeled_head=450,
        num_unlabeled_head=whole_split, imbalance_labeled=10, imbalance_unlabeled=whole_split,
        reverse_unlabeled=False, seed=1)
    assert data.labeled_counts == [450, 348, 269, 208, 161, 125, 96, 75, 58, 45]
    assert data.valid_counts == [50] * 10
    assert data.unlabeled_counts is None
    np.testing.assert_array_equal(data.unlabeled_labels, [-1] * 7)
    assert data.unlabeled_images is extra
    summary = data.summary()
    assert summary.splitlines()[1].split() == ["class0", "450", "unknown", "50", "2"]
    assert summary.splitlines()[-1].split() == ["total", "1835", "7", "500", "20"]


def test_stl_style_n1_150_gamma_20():
    data = make_long_tailed_data(
        _source(10, 500, unlabeled=np.zeros([3, 1, 1, 3], np.uint8)), num_valid_per_class=50,
        num_labeled_head=150, num_unlabeled_head=-1, imbalance_labeled=20,
        imbalance_unlabeled=-1, reverse_unlabeled=False, seed=0)
    # floor(150 * 20^(-k/9)), written out.
    assert data.labeled_counts == [150, 107, 77, 55, 39, 28, 20, 14, 10, 7]


def test_unlabeled_settings_must_fit_the_data():
    extra = np.zeros([3, 1, 1, 3], np.uint8)
    common = dict(num_valid_per_class=50, num_labeled_head=150, imbalance_labeled=10, seed=0)
    with pytest.raises(ValueError, match="num_unlabeled_head=3000.*extra unlabeled split.*-1"):
        make_long_tailed_data(_source(10, 500, unlabeled=extra), num_unlabeled_head=3000,
                              imbalance_unlabeled=-1, reverse_unlabeled=False, **common)
    with pytest.raises(ValueError, match="imbalance_unlabeled=10"):
        make_long_tailed_data(_source(10, 500, unlabeled=extra), num_unlabeled_head=-1,
                              imbalance_unlabeled=10, reverse_unlabeled=False, **common)
    with pytest.raises(ValueError, match="reverse_unlabeled"):
        make_long_tailed_data(_source(10, 500, unlabeled=extra), num_unlabeled_head=-1,
                              imbalance_unlabeled=-1, reverse_unlabeled=True, **common)
    with pytest.raises(ValueError, match="num_unlabeled_head=-1 asks for the whole extra unlabeled"):
        make_long_tailed_data(_source(10, 500), num_unlabeled_head=-1, imbalance_unlabeled=-1,
                              reverse_unlabeled=False, **common)
    with pytest.raises(ValueError, match="imbalance_unlabeled=-1"):
        make_long_tailed_data(_source(10, 500), num_unlabeled_head=100, imbalance_unlabeled=-1,
                              reverse_unlabeled=False, **common)


def test_too_many_images_per_class_is_a_clear_error():
    with pytest.raises(ValueError, match="class 0 has only 450 left"):
        make_long_tailed_data(_source(10, 500), num_valid_per_class=50, num_labeled_head=300,
                              num_unlabeled_head=200, imbalance_labeled=10,
                              imbalance_unlabeled=10, reverse_unlabeled=False, seed=0)


def test_acr_split_protocol():
    from daso_tf.data.long_tailed_data import LABELED_IN_UNLABELED

    source = _source(3, 40)
    data = make_long_tailed_data(source, num_valid_per_class=0, num_labeled_head=10, num_unlabeled_head=20,
                                 imbalance_labeled=10, imbalance_unlabeled=10, reverse_unlabeled=True, seed=123,
                                 split_protocol="acr")
    # labeled [10, int(10 * 10^-0.5), int(10 / 10)] = [10, 3, 1]; unlabeled reversed [2, 6, 20] on top
    assert data.labeled_counts == [10, 3, 1]
    assert data.unlabeled_counts == [12, 9, 21] and len(data.unlabeled_labels) == 42
    assert len(data.valid_labels) == 0 and data.valid_counts == [0, 0, 0]
    # dataset order, no shuffle: class k's images are positions 40k, 40k+1, ...
    np.testing.assert_array_equal(data.labeled_images[:10, 0, 0, 0], np.arange(10))
    np.testing.assert_array_equal(data.unlabeled_images[:12, 0, 0, 0], np.arange(12))
    np.testing.assert_array_equal(data.unlabeled_labels[:12], [LABELED_IN_UNLABELED] * 10 + [0, 0])
    assert (data.unlabeled_labels == LABELED_IN_UNLABELED).sum() == 14
    with pytest.raises(ValueError, match="no validation set"):
        make_long_tailed_data(source, num_valid_per_class=5, num_labeled_head=10, num_unlabeled_head=20,
                              imbalance_labeled=10, imbalance_unlabeled=10, reverse_unlabeled=False, seed=0,
                              split_protocol="acr")
