"""Image sources: TFDS, an image-folder tree, or in-memory arrays -> decoded uint8 arrays."""

import concurrent.futures
import dataclasses
import os
import pathlib
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
}
TFDS_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "stl10": "stl10"}
# (classes, images per class) of the TFDS train splits (all class-balanced).
TFDS_TRAIN_IMAGES_PER_CLASS = {"cifar10": (10, 5000), "cifar100": (100, 500), "stl10": (10, 500)}
# Datasets whose extra unlabeled split (labels unknown) is the unlabeled set, by TFDS split name.
TFDS_UNLABELED_SPLITS = {"stl10": "unlabelled"}
# Where TFDS downloads each dataset from (its builder's URL); probed before a download.
TFDS_DOWNLOAD_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    "stl10": "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
}
# Offline, TFDS would retry the download for minutes; this bounds the whole check.
DOWNLOAD_PROBE_TIMEOUT_S = 10.0
SOURCES = ("tfds", "folder", "numpy")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"}


@dataclasses.dataclass
class SourceArrays:
    """Decoded images held in memory (uint8 [N, H, W, 3]) and int64 labels [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    unlabeled_images: np.ndarray = None  # an extra unlabeled set (STL-10), labels unknown
    class_names: list = None

    def __post_init__(self):
        for name in ("train", "test"):
            images = np.asarray(getattr(self, f"{name}_images"))
            labels = np.asarray(getattr(self, f"{name}_labels"))
            _check_images(images, f"{name}_images")
            if labels.shape != (images.shape[0],):
                raise ValueError(f"{name}_labels must have shape [{images.shape[0]}] to match "
                                 f"{name}_images, got {labels.shape}.")
            setattr(self, f"{name}_images", images)
            setattr(self, f"{name}_labels", labels.astype(np.int64))
        if self.unlabeled_images is not None:
            self.unlabeled_images = np.asarray(self.unlabeled_images)
            _check_images(self.unlabeled_images, "unlabeled_images")
        num_classes = int(max(self.train_labels.max(initial=-1), self.test_labels.max(initial=-1))) + 1
        if self.class_names is None:
            self.class_names = [str(k) for k in range(num_classes)]
        self.class_names = list(self.class_names)
        if num_classes > len(self.class_names) or min(self.train_labels.min(initial=0),
                                                      self.test_labels.min(initial=0)) < 0:
            raise ValueError(f"labels must lie in [0, {len(self.class_names)}) "
                             f"(class_names={self.class_names}).")

    @property
    def num_classes(self):
        return len(self.class_names)


class DatasetUnavailableError(FileNotFoundError):
    """A TFDS dataset is not prepared in its data_dir and cannot be downloaded."""


def _check_images(images, name):
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be a uint8 array [N, H, W, 3], got dtype {images.dtype} "
                         f"shape {images.shape}.")


def load_source(dataset, source="tfds", data_dir=None, arrays=None):
    """Loads ``dataset`` into memory as a :class:`SourceArrays`.

    Args:
        dataset: "cifar10", "cifar100" or "stl10" for TFDS; any name for folder/numpy
            sources (it only names the data).
        source: "tfds" (tensorflow_datasets; STL-10's 'unlabelled' split becomes
            ``unlabeled_images``; a dataset that is neither prepared in ``data_dir`` nor
            downloadable raises DatasetUnavailableError within seconds), "folder"
            (``data_dir/train/<class>/*``, ``data_dir/test/<class>/*``, optional
            ``data_dir/unlabeled/**``; classes sorted by name) or "numpy" (``arrays``: a
            SourceArrays or a dict of its fields).
        data_dir: the TFDS data directory or the image-folder root.
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown data source {source!r}; expected one of {SOURCES}.")
    if source == "tfds":
        return _load_tfds(dataset, data_dir)
    if source == "folder":
        if data_dir is None:
            raise ValueError("source='folder' needs data_dir (the image-folder root).")
        return load_image_folder(data_dir)
    if arrays is None:
        raise ValueError("source='numpy' needs arrays= (a SourceArrays or a dict with "
                         "train_images, train_labels, test_images, test_labels).")
    if isinstance(arrays, SourceArrays):
        return arrays
    return SourceArrays(**dict(arrays))


def _tfds_name(dataset):
    if dataset not in TFDS_DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r} for source='tfds'; expected one of "
                         f"{sorted(TFDS_DATASETS)}.")
    return TFDS_DATASETS[dataset]


def probe_download_host(url, timeout=DOWNLOAD_PROBE_TIMEOUT_S):
    """None if a TCP connection to ``url``'s host (or the proxy the environment names for it)
    opens within ``timeout`` seconds, else why not (one short phrase).

    Runs in a daemon thread joined with ``timeout``: a DNS lookup can block far longer than
    a socket timeout, and an abandoned lookup must not keep the process alive.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname, proxy_parts.port or 80
    outcome = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["reachable"] = True
        except OSError as error:  # gaierror (DNS), refused, unreachable, timeout
            outcome["error"] = error.strerror or str(error) or type(error).__name__

    thread = threading.Thread(target=connect, name="tfds-download-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome.get("reachable"):
        return None
    reason = outcome.get("error") or f"no answer within {timeout:g} s"
    return f"{host}:{port} cannot be reached: {reason}"


def _download_is_replaced(tfds):
    # tfds.testing.mock_data (and similar test doubles) replace download_and_prepare: then
    # nothing will be downloaded and there is nothing to probe.
    method = tfds.core.DatasetBuilder.download_and_prepare
    return method.__module__ != "tensorflow_datasets.core.dataset_builder"


def check_tfds_available(dataset, data_dir=None, timeout=DOWNLOAD_PROBE_TIMEOUT_S):
    """Raises DatasetUnavailableError when TFDS ``dataset`` is not prepared in ``data_dir``
    (None: TFDS's default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) and its download
    host cannot be reached within ``timeout`` seconds; returns the data_dir root otherwise.

    A prepared dataset is never probed for; an unprepared one that is reachable is left for
    ``load_source`` to download.
    """
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    name = _tfds_name(dataset)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # "Variant folder ... has no dataset_info.json"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    finally:
        absl_logging.set_verbosity(verbosity)
    root = str(builder.data_dir_root)
    if prepared or _download_is_replaced(tfds):
        return root
    problem = probe_download_host(TFDS_DOWNLOAD_URLS[dataset], timeout)
    if problem is not None:
        raise DatasetUnavailableError(
            f"TFDS dataset '{name}' is not prepared in the TFDS data_dir {root} (looked for "
            f"{builder.data_dir}) and cannot be downloaded ({problem})")
    return root


def _load_tfds(dataset, data_dir):
    import tensorflow_datasets as tfds

    name = _tfds_name(dataset)
    check_tfds_available(dataset, data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    class_names = list(builder.info.features["label"].names)

    def split(split_name):
        ds = tfds.load(name, split=split_name, data_dir=data_dir, shuffle_files=False)
        images, labels = [], []
        # Batched reads: one NumPy copy per 1024 images, not one Python object per image.
        for batch in tfds.as_numpy(ds.batch(1024)):
            images.append(batch["image"])
            labels.append(batch["label"])
        return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int64)

    train_images, train_labels = split("train")
    test_images, test_labels = split("test")
    unlabeled_split = TFDS_UNLABELED_SPLITS.get(dataset)
    unlabeled = split(unlabeled_split)[0] if unlabeled_split else None
    return SourceArrays(train_images, train_labels, test_images, test_labels, unlabeled,
                        class_names)


def _decode(path):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), np.uint8)
    except Exception as error:  # PIL raises several types for broken files
        raise ValueError(f"Cannot read image file {path}: {error}") from error


def _decode_all(paths, workers):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(_decode, paths))
    if not images:
        return np.zeros([0, 0, 0, 3], np.uint8)
    first = images[0].shape
    for path, image in zip(paths, images):
        if image.shape != first:
            raise ValueError(f"All images must share one size: {paths[0]} is {first[1]}x"
                             f"{first[0]} but {path} is {image.shape[1]}x{image.shape[0]}.")
    return np.stack(images)


def _image_files(folder, recursive):
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _class_folders(root, split):
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {folder} not found; expected "
                                f"{root}/{split}/<class name>/<image files>.")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"Image folder {folder} has no class sub-folders.")
    return classes


def image_folder_layout(root):
    """The image files of ``root/train/<class>/*`` and ``root/test/<class>/*``, listed, not read.

    Returns ``(class_names, {"train": [[paths of class 0], ...], "test": [...]})``; raises
    (naming the folder) when ``root``, train/ or test/ is missing, a class folder is empty,
    or the class folders differ between train/ and test/.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image-folder root {root} does not exist.")
    train_classes = _class_folders(root, "train")
    test_classes = _class_folders(root, "test")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise ValueError(f"Class folders differ between {root / 'train'} and {root / 'test'}: "
                         f"only in train: {only_train}, only in test: {only_test}.")
    files = {}
    for split in ("train", "test"):
        files[split] = [_image_files(root / split / name, recursive=False) for name in train_classes]
        for name, class_files in zip(train_classes, files[split]):
            if not class_files:
                raise ValueError(f"Class folder {root / split / name} contains no images.")
    return train_classes, files


def train_images_per_class(dataset, source="tfds", data_dir=None):
    """``({class: training images}, has_extra_unlabeled_set)`` without reading any image.

    TFDS datasets: the known split sizes (classes named by their index); an image folder:
    its class folders listed. With an extra unlabeled set (STL-10's, or ``unlabeled/`` in a
    folder) the unlabeled images do not come from the training split.
    """
    if source == "folder":
        class_names, files = image_folder_layout(data_dir)
        counts = {name: len(paths) for name, paths in zip(class_names, files["train"])}
        return counts, (pathlib.Path(data_dir) / "unlabeled").is_dir()
    if dataset not in TFDS_TRAIN_IMAGES_PER_CLASS:
        raise ValueError(f"Unknown dataset {dataset!r} for source='tfds'; expected one of "
                         f"{sorted(TFDS_DATASETS)}.")
    num_classes, per_class = TFDS_TRAIN_IMAGES_PER_CLASS[dataset]
    return {str(k): per_class for k in range(num_classes)}, dataset in TFDS_UNLABELED_SPLITS


def load_image_folder(root, workers=None):
    """Reads ``root/train/<class>/*``, ``root/test/<class>/*`` and, if present,
    ``root/unlabeled/**`` (any depth) into a SourceArrays; labels index the sorted class
    folder names, which must be the same under train/ and test/."""
    root = pathlib.Path(root)
    class_names, files = image_folder_layout(root)
    workers = workers or min(16, (os.cpu_count() or 1) * 4)
    arrays = {}
    for split in ("train", "test"):
        paths = [path for class_files in files[split] for path in class_files]
        labels = [label for label, class_files in enumerate(files[split]) for _ in class_files]
        arrays[f"{split}_images"] = _decode_all(paths, workers)
        arrays[f"{split}_labels"] = np.asarray(labels, np.int64)
    unlabeled = None
    if (root / "unlabeled").is_dir():
        unlabeled_files = _image_files(root / "unlabeled", recursive=True)
        if not unlabeled_files:
            raise ValueError(f"Unlabeled folder {root / 'unlabeled'} contains no images.")
        unlabeled = _decode_all(unlabeled_files, workers)
    return SourceArrays(unlabeled_images=unlabeled, class_names=class_names, **arrays)
