"""daso_tf.training.evaluation: metrics checked against hand-computed values."""

import numpy as np
import pytest

from daso_tf.training.evaluation import class_groups, classification_metrics, running_median


def test_class_groups_by_labeled_count():
    head, medium, tail = class_groups([500, 299, 179, 107, 64, 38, 23, 13, 8, 5])
    assert (list(head), list(medium), list(tail)) == ([0, 1, 2], [3, 4, 5, 6], [7, 8, 9])
    # Reversed counts: the head is where the labels are.
    head, _, tail = class_groups([5, 8, 13, 23, 38, 64, 107, 179, 299, 500])
    assert (sorted(head), sorted(tail)) == ([7, 8, 9], [0, 1, 2])
    head, medium, tail = class_groups(list(range(100, 0, -1)))
    assert (len(head), len(medium), len(tail)) == (30, 40, 30)


def test_classification_metrics_hand_computed():
    # 3 classes, labeled counts 8:1:1 -> log prior [log .8, log .1, log .1].
    logits = np.array([
        [2.0, 0.0, 0.0],  # label 0, pred 0
        [2.0, 0.0, 0.0],  # label 0, pred 0
        [1.0, 0.0, 0.0],  # label 1, pred 0; LA: 1-log.8=1.22 vs -log.1=2.30 -> pred 1
        [0.0, 0.0, 3.0],  # label 2, pred 2
    ])
    labels = np.array([0, 0, 1, 2])
    metrics = classification_metrics(logits, labels, [8, 1, 1])
    assert metrics["top1"] == pytest.approx(75.0)
    assert metrics["per_class"] == [100.0, 0.0, 100.0]
    # LA: sample 0/1: 2-log.8=2.22 vs 2.30 -> predicts class 1 (tie-break first max: index 1)
    adjusted = np.argmax(logits - np.log([0.8, 0.1, 0.1]), axis=-1)
    assert list(adjusted) == [1, 1, 1, 2]
    assert metrics["top1_la"] == pytest.approx(50.0)
    # K=3: head = 1 class (round(0.9)=1), tail = 1 class, medium = 1.
    assert (metrics["head"], metrics["medium"], metrics["tail"]) == (100.0, 0.0, 100.0)


def test_absent_class_is_none_and_skipped_in_groups():
    metrics = classification_metrics(np.eye(3)[[0, 0]], np.array([0, 0]), [3, 2, 1])
    assert metrics["per_class"] == [100.0, None, None]
    assert metrics["head"] == 100.0 and metrics["tail"] is None


def test_running_median_of_last_window():
    assert running_median([], 20) is None
    values = list(range(1, 31))  # last 20: 11..30 -> median 20.5
    assert running_median(values, 20) == 20.5
    assert running_median([3.0, 1.0, 2.0], 20) == 2.0
