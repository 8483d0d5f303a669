"""Evaluation metrics of a long-tailed classifier (docs/evaluation.md), in NumPy.

All metrics are computed from the full logits of one evaluation pass, once per
``trainer.eval_interval`` steps, on the host: nothing here runs per training step.

- ``top1``: accuracy (%) over all evaluated images;
- ``per_class``: recall (%) of every class (NaN for a class absent from the evaluated set);
- ``head`` / ``medium`` / ``tail``: mean per-class recall over the classes ranked by their
  labeled count: the most frequent 30% are head, the least frequent 30% tail, the rest
  medium (CIFAR-10: 3 / 4 / 3 classes; CIFAR-100: 30 / 40 / 30);
- ``top1_la``: top-1 of the test-time logit-adjusted logits ``logits - log(prior_labeled)``.
"""

import numpy as np

HEAD_FRACTION = 0.3
TAIL_FRACTION = 0.3


def class_groups(labeled_counts):
    """(head, medium, tail) class-id arrays, ranked by labeled count (ties: lower id first)."""
    counts = np.asarray(labeled_counts)
    num_classes = len(counts)
    order = np.argsort(-counts, kind="stable")
    num_head = max(1, int(round(HEAD_FRACTION * num_classes)))
    num_tail = max(1, int(round(TAIL_FRACTION * num_classes)))
    num_tail = min(num_tail, num_classes - num_head)
    return order[:num_head], order[num_head:num_classes - num_tail], order[num_classes - num_tail:]


def per_class_accuracy(predictions, labels, num_classes):
    """Recall (%) per class; NaN where the class has no evaluated image."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    totals = np.bincount(labels, minlength=num_classes).astype("float64")
    hits = np.bincount(labels[predictions == labels], minlength=num_classes).astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * hits / np.maximum(totals, 1), np.nan)


def classification_metrics(logits, labels, labeled_counts):
    """The metrics above for ``logits [N, K]`` and integer ``labels [N]``."""
    logits = np.asarray(logits, dtype="float64")
    labels = np.asarray(labels).astype("int64")
    num_classes = logits.shape[-1]
    if len(labeled_counts) != num_classes:
        raise ValueError(f"labeled_counts has {len(labeled_counts)} classes, the logits {num_classes}")
    if len(labels) == 0:
        raise ValueError("cannot evaluate on an empty set")
    predictions = np.argmax(logits, axis=-1)
    per_class = per_class_accuracy(predictions, labels, num_classes)
    counts = np.asarray(labeled_counts, dtype="float64")
    log_prior = np.log(counts / counts.sum())
    adjusted_predictions = np.argmax(logits - log_prior, axis=-1)
    metrics = {
        "top1": float(100.0 * np.mean(predictions == labels)),
        "top1_la": float(100.0 * np.mean(adjusted_predictions == labels)),
        "per_class": [None if np.isnan(a) else float(a) for a in per_class],
    }
    for name, group in zip(("head", "medium", "tail"), class_groups(labeled_counts)):
        values = per_class[group]
        values = values[~np.isnan(values)]
        metrics[name] = float(np.mean(values)) if len(values) else None
    return metrics


def precision_recall(correct, predicted, actual):
    """Per-class precision ``correct / predicted`` and recall ``correct / actual`` (NaN where 0).

    ``correct[k]``: samples of class k predicted as k; ``predicted[k]``: samples predicted as
    k; ``actual[k]``: samples of class k (the column and row sums of a confusion matrix).
    """
    correct, predicted, actual = (np.asarray(c, dtype="float64") for c in (correct, predicted, actual))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, correct / np.maximum(predicted, 1), np.nan)
        recall = np.where(actual > 0, correct / np.maximum(actual, 1), np.nan)
    return precision, recall


def running_median(values, window=20):
    """Median of the last ``window`` values (the paper's "median-20"); None when empty."""
    values = list(values)[-window:]
    return float(np.median(values)) if values else None


def running_mean(values, window=20):
    """Mean of the last ``window`` values (what ACR reports); None when empty."""
    values = list(values)[-window:]
    return float(np.mean(values)) if values else None
