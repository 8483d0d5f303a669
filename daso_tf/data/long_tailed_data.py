"""A long-tailed semi-supervised dataset in memory, built from a SourceArrays."""

import dataclasses

import numpy as np

from daso_tf.data.splits import acr_class_counts, first_per_class_split, long_tailed_split

SPLIT_PROTOCOLS = ("daso", "acr")
# Unlabeled "labels" that are not classes: unknown (STL-10's extra split), and, in ACR's
# split, an unlabeled image that is also a labeled image (ACR's -2; its learner excludes
# those from its class-distribution estimate).
UNKNOWN_LABEL = -1
LABELED_IN_UNLABELED = -2

# ``num_unlabeled_head`` / ``imbalance_unlabeled`` value meaning "the whole extra unlabeled
# split" (STL-10's 100k 'unlabelled' images, or a folder source's unlabeled/ tree).
WHOLE_UNLABELED_SPLIT = -1


def _is_whole_split(value):
    return value is None or value == WHOLE_UNLABELED_SPLIT


def check_unlabeled_settings(has_extra_unlabeled, *, num_unlabeled_head, imbalance_unlabeled,
                             reverse_unlabeled, dataset="this dataset"):
    """Raises ValueError unless the unlabeled settings fit the data.

    With an extra unlabeled split the whole split is the unlabeled set (its labels are
    unknown, so it cannot be subsampled per class): ``num_unlabeled_head`` and
    ``imbalance_unlabeled`` must be ``WHOLE_UNLABELED_SPLIT`` (-1; None is accepted) and
    ``reverse_unlabeled`` False. Without one, the unlabeled set is drawn from the training
    split and -1 has nothing to refer to. ``dataset`` names the data in the message.
    """
    if has_extra_unlabeled:
        for name, value in (("num_unlabeled_head", num_unlabeled_head),
                            ("imbalance_unlabeled", imbalance_unlabeled)):
            if not _is_whole_split(value):
                raise ValueError(
                    f"{name}={value!r}: {dataset} has an extra unlabeled split (labels unknown) "
                    f"that is used whole; expected {WHOLE_UNLABELED_SPLIT}")
        if reverse_unlabeled:
            raise ValueError(f"reverse_unlabeled=True: the extra unlabeled split of {dataset} has "
                             "unknown labels and is used whole; expected false")
    elif _is_whole_split(num_unlabeled_head) or _is_whole_split(imbalance_unlabeled):
        name, value = (("num_unlabeled_head", num_unlabeled_head)
                       if _is_whole_split(num_unlabeled_head)
                       else ("imbalance_unlabeled", imbalance_unlabeled))
        raise ValueError(
            f"{name}={value!r} asks for the whole extra unlabeled split, but {dataset} has none "
            "(stl10 has one, and a folder source with an unlabeled/ directory); the unlabeled "
            "images are drawn from train: expected num_unlabeled_head >= 0 (M1) and "
            "imbalance_unlabeled >= 1")


@dataclasses.dataclass
class LongTailedData:
    """Labeled / unlabeled / validation / test arrays (uint8 images, int64 labels; unlabeled
    labels are -1 where unknown, -2 for labeled images in the unlabeled set of ACR's split)
    and per-class counts (``unlabeled_counts`` counts the unlabeled set's true classes)."""

    labeled_images: np.ndarray
    labeled_labels: np.ndarray
    unlabeled_images: np.ndarray
    unlabeled_labels: np.ndarray
    valid_images: np.ndarray
    valid_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list
    labeled_counts: list
    unlabeled_counts: list  # None when the unlabeled labels are unknown (STL-10)
    valid_counts: list

    @property
    def num_classes(self):
        return len(self.class_names)

    def summary(self):
        """A per-class table of labeled / unlabeled / validation / test counts."""
        test_counts = np.bincount(self.test_labels, minlength=self.num_classes).tolist()
        unlabeled = (self.unlabeled_counts if self.unlabeled_counts is not None
                     else ["unknown"] * self.num_classes)
        width = max([5] + [len(name) for name in self.class_names])
        lines = [f"{'class':<{width}} {'labeled':>8} {'unlabeled':>10} {'valid':>6} {'test':>6}"]
        for k, name in enumerate(self.class_names):
            lines.append(f"{name:<{width}} {self.labeled_counts[k]:>8} {unlabeled[k]:>10} "
                         f"{self.valid_counts[k]:>6} {test_counts[k]:>6}")
        lines.append(f"{'total':<{width}} {len(self.labeled_labels):>8} "
                     f"{len(self.unlabeled_images):>10} {len(self.valid_labels):>6} "
                     f"{len(self.test_labels):>6}")
        return "\n".join(lines)


def make_long_tailed_data(source_arrays, *, num_valid_per_class, num_labeled_head,
                          num_unlabeled_head, imbalance_labeled, imbalance_unlabeled,
                          reverse_unlabeled, seed, split_protocol="daso"):
    """Splits ``source_arrays`` as the reference does.

    Order (each stage a fresh ``RandomState(seed)``, see ``long_tailed_split``): a
    class-balanced validation set of ``num_valid_per_class`` per class out of the training
    split; then, without an extra unlabeled set (CIFAR), the first N1 / next M1 of each
    class's shuffle become labeled / unlabeled candidates and class k keeps
    ``floor(N1 * gamma_l^(-k/(K-1)))`` labeled and ``floor(M1 * gamma_u^(-k/(K-1)))``
    unlabeled images (``reverse_unlabeled``: class K-1 gets M1).

    With an extra unlabeled set (STL-10's 'unlabelled' split), every non-validation
    training image is a labeled candidate, imbalanced with N1 / gamma_l (STL-10: 500 - 50
    = 450 per class, N1=450 gamma_l=10 -> 450, 348, ..., 45); the unlabeled images are the
    whole extra set, labels -1; ``num_unlabeled_head`` and ``imbalance_unlabeled`` must then
    be ``WHOLE_UNLABELED_SPLIT`` (-1) (see ``check_unlabeled_settings``).

    ``split_protocol="acr"`` draws ACR's split instead (``splits.first_per_class_split``:
    the first images of each class in dataset order, counts from ``acr_class_counts``, the
    unlabeled set includes the labeled images, marked ``LABELED_IN_UNLABELED``; no
    validation set, so ``num_valid_per_class`` must be 0; ``seed`` is not used).
    """
    source = source_arrays
    num_classes = source.num_classes
    extra_unlabeled = source.unlabeled_images is not None
    if split_protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"Unknown split_protocol {split_protocol!r}; expected one of {SPLIT_PROTOCOLS}.")
    check_unlabeled_settings(extra_unlabeled, num_unlabeled_head=num_unlabeled_head,
                             imbalance_unlabeled=imbalance_unlabeled,
                             reverse_unlabeled=reverse_unlabeled)
    if split_protocol == "acr":
        return _acr_split(source, num_valid_per_class, num_labeled_head, num_unlabeled_head,
                          imbalance_labeled, imbalance_unlabeled, reverse_unlabeled)
    labeled, unlabeled, valid = long_tailed_split(
        source.train_labels, num_classes=num_classes,
        num_valid=int(num_valid_per_class) * num_classes,
        num_labeled_head=num_labeled_head,
        num_unlabeled_head=None if extra_unlabeled else num_unlabeled_head,
        imbalance_labeled=imbalance_labeled,
        imbalance_unlabeled=None if extra_unlabeled else imbalance_unlabeled,
        reverse_unlabeled=reverse_unlabeled, seed=seed)
    if extra_unlabeled:
        unlabeled_images = source.unlabeled_images
        unlabeled_labels = np.full([len(unlabeled_images)], UNKNOWN_LABEL, np.int64)
        unlabeled_counts = None
    else:
        unlabeled_images = source.train_images[unlabeled]
        unlabeled_labels = source.train_labels[unlabeled]
        unlabeled_counts = np.bincount(unlabeled_labels, minlength=num_classes).tolist()

    def counts(labels):
        return np.bincount(labels, minlength=num_classes).tolist()

    return LongTailedData(
        labeled_images=source.train_images[labeled], labeled_labels=source.train_labels[labeled],
        unlabeled_images=unlabeled_images, unlabeled_labels=unlabeled_labels,
        valid_images=source.train_images[valid], valid_labels=source.train_labels[valid],
        test_images=source.test_images, test_labels=source.test_labels,
        class_names=list(source.class_names),
        labeled_counts=counts(source.train_labels[labeled]), unlabeled_counts=unlabeled_counts,
        valid_counts=counts(source.train_labels[valid]))


def _acr_split(source, num_valid_per_class, num_labeled_head, num_unlabeled_head, imbalance_labeled,
               imbalance_unlabeled, reverse_unlabeled):
    if int(num_valid_per_class) != 0:
        raise ValueError(f"ACR's split has no validation set; num_valid_per_class must be 0, got "
                         f"{num_valid_per_class}.")
    num_classes = source.num_classes
    labeled_counts = acr_class_counts(num_labeled_head, imbalance_labeled, num_classes)
    extra_unlabeled = source.unlabeled_images is not None
    unlabeled_counts = None if extra_unlabeled else acr_class_counts(
        num_unlabeled_head, imbalance_unlabeled, num_classes, reverse=reverse_unlabeled)
    labeled, unlabeled, is_labeled = first_per_class_split(source.train_labels, labeled_counts, unlabeled_counts)
    if extra_unlabeled:
        unlabeled_images = source.unlabeled_images
        unlabeled_labels = np.full([len(unlabeled_images)], UNKNOWN_LABEL, np.int64)
        counts_of_unlabeled = None
    else:
        unlabeled_images = source.train_images[unlabeled]
        true_labels = source.train_labels[unlabeled]
        counts_of_unlabeled = np.bincount(true_labels, minlength=num_classes).tolist()
        unlabeled_labels = np.where(is_labeled, LABELED_IN_UNLABELED, true_labels).astype(np.int64)
    empty = np.zeros([0], np.int64)
    return LongTailedData(
        labeled_images=source.train_images[labeled], labeled_labels=source.train_labels[labeled],
        unlabeled_images=unlabeled_images, unlabeled_labels=unlabeled_labels,
        valid_images=source.train_images[empty], valid_labels=source.train_labels[empty],
        test_images=source.test_images, test_labels=source.test_labels,
        class_names=list(source.class_names),
        labeled_counts=np.bincount(source.train_labels[labeled], minlength=num_classes).tolist(),
        unlabeled_counts=counts_of_unlabeled, valid_counts=[0] * num_classes)
