import numpy as np
import pytest

from daso_tf.data import class_counts, long_tailed_split

SPLIT_KEYS = ("num_classes", "num_valid", "num_labeled_head", "num_unlabeled_head",
              "imbalance_labeled", "imbalance_unlabeled", "reverse_unlabeled", "seed")


def test_every_golden_split_is_reproduced_exactly(golden_dir):
    files = sorted(golden_dir.glob("*_split_*.npz"))
    assert files
    for path in files:
        golden = np.load(path)
        labeled, unlabeled, valid = long_tailed_split(
            golden["labels"], **{key: golden[key].item() for key in SPLIT_KEYS})
        for name, got in (("labeled", labeled), ("unlabeled", unlabeled), ("valid", valid)):
            expected = golden[f"{name}_indices"]
            assert len(got) == len(expected), (path.name, name)
            assert set(got.tolist()) == set(expected.tolist()), (path.name, name)


# The per-class counts of the reference's split (docs/data.md section 1).
@pytest.mark.parametrize("head,ratio,classes,expected", [
    (1500, 100, 10, [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]),
    (3000, 100, 10, [3000, 1798, 1078, 646, 387, 232, 139, 83, 50, 30]),
    (500, 100, 10, [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]),
    (4000, 100, 10, [4000, 2397, 1437, 861, 516, 309, 185, 111, 66, 40]),
    (500, 150, 10, [500, 286, 164, 94, 53, 30, 17, 10, 5, 3]),
    (450, 10, 10, [450, 348, 269, 208, 161, 125, 96, 75, 58, 45]),
])
def test_class_counts_match_the_paper_table(head, ratio, classes, expected):
    assert class_counts(head, ratio, classes) == expected
    assert class_counts(head, ratio, classes, reverse=True) == expected[::-1]


@pytest.mark.parametrize("head,ratio,total", [(50, 10, 1911), (150, 10, 5835), (400, 10, 15651),
                                              (300, 10, 11720)])
def test_cifar100_totals_match_the_paper(head, ratio, total):
    assert sum(class_counts(head, ratio, 100)) == total


def test_balanced_and_reversed_unlabeled_split_counts():
    labels = np.repeat(np.arange(10), 100)
    labeled, unlabeled, valid = long_tailed_split(
        labels, num_classes=10, num_valid=100, num_labeled_head=30, num_unlabeled_head=60,
        imbalance_labeled=10, imbalance_unlabeled=10, reverse_unlabeled=True, seed=0)
    assert np.bincount(labels[labeled]).tolist() == class_counts(30, 10, 10)
    assert np.bincount(labels[unlabeled]).tolist() == class_counts(60, 10, 10, reverse=True)
    assert np.bincount(labels[valid]).tolist() == [10] * 10
    assert not set(labeled) & set(unlabeled) and not set(valid) & (set(labeled) | set(unlabeled))
    _, uniform, _ = long_tailed_split(
        labels, num_classes=10, num_valid=100, num_labeled_head=30, num_unlabeled_head=60,
        imbalance_labeled=10, imbalance_unlabeled=1, reverse_unlabeled=True, seed=0)
    assert np.bincount(labels[uniform]).tolist() == [60] * 10


def test_without_unlabeled_stage_all_remaining_are_labeled_candidates():
    labels = np.repeat(np.arange(4), 20)
    labeled, unlabeled, valid = long_tailed_split(
        labels, num_classes=4, num_valid=8, num_labeled_head=18, num_unlabeled_head=None,
        imbalance_labeled=1, imbalance_unlabeled=1, reverse_unlabeled=False, seed=3)
    assert len(unlabeled) == 0 and len(labeled) == 72 and len(valid) == 8


def test_clear_errors():
    labels = np.repeat(np.arange(10), 100)
    kwargs = dict(num_classes=10, num_valid=100, num_labeled_head=50, num_unlabeled_head=60,
                  imbalance_labeled=10, imbalance_unlabeled=10, reverse_unlabeled=False, seed=0)
    with pytest.raises(ValueError, match="class 0 has only 90"):
        long_tailed_split(labels, **kwargs)
    with pytest.raises(ValueError, match="imbalance_labeled.*0.5"):
        long_tailed_split(labels, **{**kwargs, "num_unlabeled_head": 10,
                                     "imbalance_labeled": 0.5})
    with pytest.raises(ValueError, match="num_classes=5"):
        long_tailed_split(labels, **{**kwargs, "num_classes": 5})


def test_acr_class_counts_force_the_tail_and_reverse():
    from daso_tf.data.splits import acr_class_counts

    # ACR's make_imb_data for its CIFAR-10 commands (N1 500, M1 4000, gamma 100)
    assert acr_class_counts(500, 100, 10) == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert acr_class_counts(4000, 100, 10, reverse=True) == [40, 66, 111, 185, 309, 516, 861, 1437, 2397, 4000]
    assert acr_class_counts(4000, 1, 10) == [4000] * 10
    # The last count is int(N1 / gamma), where int(N1 * mu^(K-1)) would floor 9.99.. to 9.
    counts = acr_class_counts(1500, 150, 100)
    assert counts[-1] == 10 and counts[0] == 1500


def test_first_per_class_split_takes_dataset_order_and_nests_labeled_in_unlabeled():
    from daso_tf.data.splits import first_per_class_split

    labels = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0])
    labeled, unlabeled, is_labeled = first_per_class_split(labels, [2, 1], [1, 2])
    np.testing.assert_array_equal(labeled, [0, 2, 1])  # class 0's first two, class 1's first
    np.testing.assert_array_equal(unlabeled, [0, 2, 4, 1, 3, 5])  # first N_k + M_k of each class
    np.testing.assert_array_equal(is_labeled, [True, True, False, True, False, False])
    with pytest.raises(ValueError, match="class 1 needs 5 images"):
        first_per_class_split(labels, [2, 1], [1, 4])
