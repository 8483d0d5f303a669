"""Long-tailed splits of a labelled training set, reproducing the reference draws.

The reference (ytaek-oh/daso, lib/dataset/utils.py) builds the split in stages, each
drawing from a FRESH ``numpy.random.RandomState(seed)`` and shuffling each class's
positions once, class by class. Every stage works on the positions of the array the
previous stage produced (a re-ordered subset), so the stages are replayed here on index
arrays to select exactly the same original examples.
"""

import numpy as np


def _as_int_array(values, name):
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of integer labels, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer class labels, got dtype {array.dtype}.")
    return array.astype(np.int64)


def _check_imbalance(value, name):
    if not np.isfinite(value) or value < 1:
        raise ValueError(
            f"`{name}` must be an imbalance ratio >= 1 (head count / tail count), got {value!r}.")


def class_counts(head, imbalance, num_classes, reverse=False):
    """Per-class counts ``int(head * (1/imbalance)**(rank/(K-1)))``, class 0 the head.

    Same float expression as the reference (so floors agree to the last ulp). With
    ``reverse`` the ranks run backwards: class K-1 gets ``head``.
    """
    _check_imbalance(imbalance, "imbalance")
    if head < 0:
        raise ValueError(f"`head` must be >= 0, got {head!r}.")
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be >= 1, got {num_classes!r}.")
    ranks = list(range(num_classes))
    if reverse:
        ranks.reverse()
    if num_classes == 1:
        return [int(head)]
    return [int(head * ((1.0 / imbalance) ** (rank / (num_classes - 1.0)))) for rank in ranks]


def _shuffle_per_class(labels, positions, class_order, take, seed):
    """One reference stage: fresh RandomState(seed), per class (in ``class_order``) shuffle
    that class's positions (ascending, as np.where returns them) and split them with
    ``take(class_rank, shuffled) -> list of arrays``."""
    rng = np.random.RandomState(seed)
    outputs = None
    for rank, label in enumerate(class_order):
        class_positions = np.where(labels[positions] == label)[0]
        rng.shuffle(class_positions)
        parts = take(rank, label, class_positions)
        if outputs is None:
            outputs = [[] for _ in parts]
        for out, part in zip(outputs, parts):
            out.extend(positions[part])
    return [np.asarray(out, dtype=np.int64) for out in outputs]


def long_tailed_split(labels, *, num_classes, num_valid, num_labeled_head, num_unlabeled_head,
                      imbalance_labeled, imbalance_unlabeled, reverse_unlabeled, seed):
    """Selects the labeled / unlabeled / validation examples of a long-tailed SSL split.

    Args:
        labels: integer labels of the full training set, shape [N].
        num_classes: K; classes are 0..K-1, class 0 the head.
        num_valid: size of the class-balanced validation set in total
            (``num_valid // K`` per class); 0 for none.
        num_labeled_head: N1, labeled images of the head class.
        num_unlabeled_head: M1, unlabeled images of the head class; ``None`` skips the
            labeled/unlabeled candidate stage (STL-10, whose unlabeled set is separate):
            then every non-validation image is a labeled candidate and no unlabeled
            indices are returned.
        imbalance_labeled, imbalance_unlabeled: gamma_l, gamma_u >= 1 (1 = balanced);
            ``imbalance_unlabeled`` is unused (not checked) when ``num_unlabeled_head`` is None.
        reverse_unlabeled: reverse the class order of the unlabeled counts.
        seed: the run seed.

    Returns:
        ``(labeled_indices, unlabeled_indices, valid_indices)``: int64 index arrays into
        ``labels`` (in the reference's order).
    """
    labels = _as_int_array(labels, "labels")
    num_classes = int(num_classes)
    seed = int(seed)
    _check_imbalance(imbalance_labeled, "imbalance_labeled")
    if num_unlabeled_head is not None:
        _check_imbalance(imbalance_unlabeled, "imbalance_unlabeled")
        if int(num_unlabeled_head) < 0:
            raise ValueError(f"`num_unlabeled_head` must be >= 0 (or None), got {num_unlabeled_head!r}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`labels` must lie in [0, num_classes={num_classes}), got range "
            f"[{labels.min()}, {labels.max()}].")
    per_class = np.bincount(labels, minlength=num_classes)
    num_valid_per_class = int(num_valid) // num_classes
    classes = list(range(num_classes))
    positions = np.arange(labels.size, dtype=np.int64)

    # 1. class-balanced validation set (the first num_valid_per_class of each shuffle).
    valid = np.zeros([0], np.int64)
    if num_valid_per_class > 0:
        short = [k for k in classes if per_class[k] < num_valid_per_class]
        if short:
            raise ValueError(
                f"num_valid={num_valid} asks {num_valid_per_class} validation images per class "
                f"but class {short[0]} has only {per_class[short[0]]}.")
        positions, valid = _shuffle_per_class(
            labels, positions, classes,
            lambda rank, label, p: (p[num_valid_per_class:], p[:num_valid_per_class]), seed)

    remaining = np.bincount(labels[positions], minlength=num_classes)
    needed = int(num_labeled_head) + int(num_unlabeled_head or 0)
    short = [k for k in classes if remaining[k] < needed]
    if short:
        k = short[0]
        raise ValueError(
            f"num_labeled_head={num_labeled_head} + num_unlabeled_head={num_unlabeled_head or 0} "
            f"= {needed} images per class are needed, but class {k} has only {remaining[k]} "
            f"left after taking {num_valid_per_class} per class for validation.")

    # 2. disjoint labeled / unlabeled candidates: first N1, next M1 of each shuffle.
    n1 = int(num_labeled_head)
    if num_unlabeled_head is None:
        labeled, unlabeled = positions, None
    else:
        m1 = int(num_unlabeled_head)
        labeled, unlabeled = _shuffle_per_class(
            labels, positions, classes, lambda rank, label, p: (p[:n1], p[n1:n1 + m1]), seed)

    # 3. labeled imbalance (only when gamma_l > 1, like the reference).
    def imbalance(indices, head, ratio, order):
        def take(rank, label, p):
            return (p[:int(head * ((1.0 / ratio) ** (rank / (num_classes - 1.0))))],)
        return _shuffle_per_class(labels, indices, order, take, seed)[0]

    if imbalance_labeled > 1:
        labeled = imbalance(labeled, n1, imbalance_labeled, classes)
    # 4. unlabeled imbalance; reversing flips the class order the ranks are given in.
    if unlabeled is not None and imbalance_unlabeled > 1:
        order = classes[::-1] if reverse_unlabeled else classes
        unlabeled = imbalance(unlabeled, int(num_unlabeled_head), imbalance_unlabeled, order)
    if unlabeled is None:
        unlabeled = np.zeros([0], np.int64)
    return labeled, unlabeled, valid


# ----------------------------------------------------------------------------- ACR's protocol


def acr_class_counts(head, imbalance, num_classes, reverse=False):
    """Per-class counts as ACR draws them (Gank0078/ACR ``make_imb_data``).

    ``int(head * mu**k)`` with ``mu = (1/imbalance)**(1/(K-1))`` for k < K-1, and the last
    class forced to ``int(head / imbalance)``; ``reverse`` reverses the list (class 0 then
    gets the forced tail count). Can differ by one image from ``class_counts``'s floors.
    """
    _check_imbalance(imbalance, "imbalance")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2, got {num_classes!r}.")
    mu = np.power(1.0 / imbalance, 1.0 / (num_classes - 1))
    counts = [int(head * np.power(mu, k)) for k in range(num_classes - 1)] + [int(head / imbalance)]
    return counts[::-1] if reverse else counts


def first_per_class_split(labels, labeled_counts, unlabeled_counts=None):
    """ACR's split (``train_split``): per class, in class order, the FIRST images of the class
    in dataset order (no shuffle, no validation set).

    Class k's labeled images are its first ``labeled_counts[k]``; its unlabeled images are its
    first ``labeled_counts[k] + unlabeled_counts[k]``, i.e. the unlabeled set INCLUDES the
    labeled images. Returns ``(labeled_indices, unlabeled_indices, unlabeled_is_labeled)``:
    index arrays into ``labels`` and a bool array marking the unlabeled entries that are
    labeled images too (None, None when ``unlabeled_counts`` is None).
    """
    labels = _as_int_array(labels, "labels")
    labeled, unlabeled, is_labeled = [], [], []
    for k, count in enumerate(labeled_counts):
        positions = np.where(labels == k)[0]
        wanted = count + (0 if unlabeled_counts is None else unlabeled_counts[k])
        if len(positions) < wanted:
            raise ValueError(f"class {k} needs {wanted} images for ACR's split but has only {len(positions)}.")
        labeled.extend(positions[:count])
        if unlabeled_counts is not None:
            unlabeled.extend(positions[:wanted])
            is_labeled.extend([True] * count + [False] * unlabeled_counts[k])
    labeled = np.asarray(labeled, np.int64)
    if unlabeled_counts is None:
        return labeled, None, None
    return labeled, np.asarray(unlabeled, np.int64), np.asarray(is_labeled, bool)
