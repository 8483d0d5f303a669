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
