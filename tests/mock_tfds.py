"""Fake TFDS data with each dataset's real structure, for ``tfds.testing.mock_data``.

``mock_tfds()`` replaces only the data TFDS reads: the real ``tfds.load`` calls of
``daso_tf.data.load_source`` run, with the real split names (STL-10's 'unlabelled'
included), image sizes (32 / 96), classes (10 / 100) and per-class counts of the splits the
paper draws from (CIFAR-10: 5000 train / 1000 test per class; CIFAR-100: 500 / 100;
STL-10: 500 train / 800 test per class). Only STL-10's 100k 'unlabelled' split is shrunk:
it is used whole, so its size changes no per-class count. The images are cheap patterns
(a fixed random tile shifted by the label), enough to train a few steps.
"""

import contextlib

import numpy as np

FAKE_TFDS = {
    "cifar10": dict(size=32, classes=10, train=5000, test=1000),
    "cifar100": dict(size=32, classes=100, train=500, test=100),
    "stl10": dict(size=96, classes=10, train=500, test=800, unlabelled=300),
}
_CACHE = {}


def fake_split(dataset, split):
    """(images uint8 [N, S, S, 3], labels int64 [N]) of a fake TFDS split, class by class."""
    key = (dataset, split)
    if key not in _CACHE:
        spec = FAKE_TFDS[dataset]
        if split == "unlabelled":
            labels = np.full([spec["unlabelled"]], -1, np.int64)
        else:
            labels = np.repeat(np.arange(spec["classes"], dtype=np.int64), spec[split])
        size = spec["size"]
        tile = np.random.default_rng(len(split)).integers(0, 256, (size, size, 3), np.uint8)
        shift = (labels * 37 % 256).astype(np.uint8)
        _CACHE[key] = (tile[None] + shift[:, None, None, None], labels)  # uint8: wraps mod 256
    return _CACHE[key]


def fake_as_dataset(self, split, *args, **kwargs):
    """``as_dataset_fn`` for tfds.testing.mock_data: the fake split, with TFDS's features."""
    import tensorflow as tf

    images, labels = fake_split(self.name, str(split))
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})


@contextlib.contextmanager
def mock_tfds():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(as_dataset_fn=fake_as_dataset):
        yield
