"""Shared pieces of the benchmarks: data, thread settings, device and memory reports.

Nothing here is timed; ``bench.train_step`` (and friends) time what they build with it.
"""

import os
import pathlib
import platform
import resource
import shutil
import statistics
import zipfile

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("DASO_SHARED_DIR", REPO_ROOT.parent / "shared"))
CIFAR10_ZIP = SHARED_DIR / "datasets" / "cifar10_jpeg.zip"
# The reference PyTorch code on this project's 2-core CPU (FixMatch+DASO, WRN-28-2, B=64,
# mu=2, input included): a figure given with the performance issue, not measured here.
REFERENCE_CPU_SECONDS_PER_STEP = 2.7


def cache_dir():
    """Where decoded datasets are kept between runs ($DASO_TF_CACHE, default ~/.cache/daso_tf)."""
    path = pathlib.Path(os.environ.get("DASO_TF_CACHE", pathlib.Path.home() / ".cache" / "daso_tf"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def set_threads(intra_op, inter_op):
    """tf.config threading, before TensorFlow runs anything (0 = TensorFlow's default)."""
    import tensorflow as tf

    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra_op))
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))


def cifar10_folder(per_class=None):
    """The offline CIFAR-10 copy unzipped into the cache as an image folder; its path.

    ``<folder>/train/<class>/*.jpg`` and ``<folder>/test/<class>/*.jpg`` (``data.source=folder``).
    ``per_class``: None for every image, or ``(train, test)`` to take only the first images
    of each class (by file name), for quick runs. Extracted into a temporary sibling and
    renamed into place, so an interrupted extraction is never mistaken for a complete one.
    FileNotFoundError without the zip.
    """
    if not CIFAR10_ZIP.is_file():
        raise FileNotFoundError(f"{CIFAR10_ZIP} not found (set DASO_SHARED_DIR to the directory holding "
                                "datasets/cifar10_jpeg.zip)")
    name = "cifar10_jpeg" if per_class is None else f"cifar10_jpeg_{per_class[0]}_{per_class[1]}_per_class"
    folder = cache_dir() / name
    if folder.is_dir():
        return folder
    partial = cache_dir() / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(CIFAR10_ZIP) as archive:
        if per_class is None:
            archive.extractall(partial)
        else:
            wanted, taken = dict(zip(("train", "test"), per_class)), {}
            for member in sorted(archive.namelist()):
                parts = pathlib.PurePosixPath(member).parts  # train/<class>/<file>.jpg
                if len(parts) != 3 or parts[0] not in wanted or member.endswith("/"):
                    continue
                if taken.get(parts[:2], 0) < wanted[parts[0]]:
                    taken[parts[:2]] = taken.get(parts[:2], 0) + 1
                    archive.extract(member, partial)
    try:
        partial.rename(folder)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def cifar10_source():
    """The offline CIFAR-10 copy as ``daso_tf.data.SourceArrays``, or None without the zip.

    First call: unzip into the cache (``cifar10_folder``) and decode with the project's
    image-folder source (``daso_tf.data.load_source(source="folder")``), then keep the
    arrays as an .npz so later runs load in about a second.
    """
    from daso_tf.data import load_source

    if not CIFAR10_ZIP.is_file():
        return None
    arrays_path = cache_dir() / "cifar10_jpeg_arrays.npz"
    if not arrays_path.is_file():
        folder = cifar10_folder()
        source = load_source("cifar10", source="folder", data_dir=str(folder))
        partial = arrays_path.with_suffix(".partial.npz")
        np.savez(partial, train_images=source.train_images, train_labels=source.train_labels,
                 test_images=source.test_images, test_labels=source.test_labels,
                 class_names=np.asarray(source.class_names))
        partial.replace(arrays_path)
    with np.load(arrays_path) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["class_names"] = [str(name) for name in arrays["class_names"]]
    return load_source("cifar10", source="numpy", arrays=arrays)


def long_tailed_data(data_config, data="auto"):
    """(LongTailedData, description) for an experiment's data config.

    ``data``: "cifar10_jpeg" (the offline copy, split as the experiment splits it), "random"
    (uniform random uint8 images in the experiment's per-class counts: same shapes and
    batch composition, no decoding) or "auto" (the copy when present, else random).
    """
    from daso_tf.data import LongTailedData, class_counts, make_long_tailed_data

    if data not in ("auto", "cifar10_jpeg", "random"):
        raise ValueError(f"--data must be auto, cifar10_jpeg or random; got {data!r}.")
    if data in ("auto", "cifar10_jpeg") and data_config.dataset == "cifar10":
        source = cifar10_source()
        if source is not None:
            lt_data = make_long_tailed_data(
                source, num_valid_per_class=data_config.num_valid_per_class,
                num_labeled_head=data_config.num_labeled_head,
                num_unlabeled_head=data_config.num_unlabeled_head,
                imbalance_labeled=data_config.imbalance_labeled,
                imbalance_unlabeled=data_config.imbalance_unlabeled,
                reverse_unlabeled=data_config.reverse_unlabeled, seed=data_config.seed)
            return lt_data, f"cifar10_jpeg ({CIFAR10_ZIP.name})"
    if data == "cifar10_jpeg":
        if data_config.dataset != "cifar10":
            raise ValueError(f"--data cifar10_jpeg needs a cifar10 experiment; this one uses "
                             f"{data_config.dataset!r} (use --data random).")
        raise FileNotFoundError(f"--data cifar10_jpeg: {CIFAR10_ZIP} not found (set DASO_SHARED_DIR "
                                "to the directory holding datasets/cifar10_jpeg.zip).")
    num_classes = {"cifar10": 10, "cifar100": 100, "stl10": 10}[data_config.dataset]
    size = data_config.image_size
    labeled = class_counts(data_config.num_labeled_head, data_config.imbalance_labeled, num_classes)
    head = data_config.num_unlabeled_head if data_config.num_unlabeled_head > 0 else data_config.num_labeled_head
    imbalance = data_config.imbalance_unlabeled if data_config.imbalance_unlabeled > 0 else 1.0
    unlabeled = class_counts(head, imbalance, num_classes, reverse=data_config.reverse_unlabeled)
    rng = np.random.default_rng(data_config.seed)

    def images(count):
        return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)

    labeled_labels = np.repeat(np.arange(num_classes), labeled).astype(np.int64)
    unlabeled_labels = np.repeat(np.arange(num_classes), unlabeled).astype(np.int64)
    empty_images, empty_labels = images(0), np.zeros([0], np.int64)
    lt_data = LongTailedData(
        images(len(labeled_labels)), labeled_labels, images(len(unlabeled_labels)), unlabeled_labels,
        empty_images, empty_labels, empty_images, empty_labels,
        [str(k) for k in range(num_classes)], list(labeled), list(unlabeled), [0] * num_classes)
    return lt_data, "random uint8 images"


def device_report():
    """{"device": name, "device_type": "GPU"|"CPU", ...} of the device TensorFlow computes on."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"device": details.get("device_name", gpus[0].name), "device_type": "GPU",
                "device_count": len(gpus)}
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"device": f"{name} ({os.cpu_count()} cores)", "device_type": "CPU", "device_count": 1}


def reset_device_peak_memory():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory_mib():
    """(peak host RSS of this process, peak GPU memory since the last reset or None)."""
    import tensorflow as tf

    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    device = None
    if tf.config.list_physical_devices("GPU"):
        device = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return round(host, 1), None if device is None else round(device, 1)


def load_average():
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def summarize_times(seconds_per_step, images_per_step):
    """Median seconds per step and the rates derived from it."""
    median = statistics.median(seconds_per_step)
    return {
        "seconds_per_step_median": round(median, 5),
        "steps_per_second": round(1.0 / median, 4),
        "images_per_second": round(images_per_step / median, 2),
        "seconds_per_step": [round(s, 5) for s in seconds_per_step],
    }
