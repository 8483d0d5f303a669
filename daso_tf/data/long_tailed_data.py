"""A long-tailed semi-supervised dataset in memory, built from a SourceArrays."""

import dataclasses

import numpy as np

from daso_tf.data.splits import long_tailed_split


@dataclasses.dataclass
class LongTailedData:
    """Labeled / unlabeled / validation / test arrays (uint8 images, int64 labels; unlabeled
    labels are -1 where unknown) and per-class counts."""

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
                     else ["?"] * self.num_classes)
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
                          reverse_unlabeled, seed):
    """Splits ``source_arrays`` as the reference does (spec/DASO.md section 5).

    Without an extra unlabeled set (CIFAR), the unlabeled images come from the training
    split (``num_unlabeled_head`` = M1). With one (STL-10), the labeled images are the
    training split minus validation, imbalanced with N1 / gamma_l, the unlabeled images are
    the whole extra set (labels -1) and ``num_unlabeled_head`` / ``imbalance_unlabeled`` /
    ``reverse_unlabeled`` are unused.
    """
    source = source_arrays
    num_classes = source.num_classes
    extra_unlabeled = source.unlabeled_images is not None
    labeled, unlabeled, valid = long_tailed_split(
        source.train_labels, num_classes=num_classes,
        num_valid=int(num_valid_per_class) * num_classes,
        num_labeled_head=num_labeled_head,
        num_unlabeled_head=None if extra_unlabeled else num_unlabeled_head,
        imbalance_labeled=imbalance_labeled, imbalance_unlabeled=imbalance_unlabeled,
        reverse_unlabeled=reverse_unlabeled, seed=seed)
    if extra_unlabeled:
        unlabeled_images = source.unlabeled_images
        unlabeled_labels = np.full([len(unlabeled_images)], -1, np.int64)
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
