import socket
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from daso_tf.data import SourceArrays, load_image_folder, load_source


def _write_folder(root, classes=("cat", "ant"), per_class=3, size=8, splits=("train", "test")):
    rng = np.random.default_rng(0)
    written = {}
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
                written[(split, name, i)] = pixels
    return written


def test_small_written_folder_round_trips(tmp_path):
    written = _write_folder(tmp_path)
    (tmp_path / "unlabeled" / "deep").mkdir(parents=True)
    Image.fromarray(written[("train", "cat", 0)]).save(tmp_path / "unlabeled/deep/x.png")
    source = load_source("mine", source="folder", data_dir=tmp_path)
    assert source.class_names == ["ant", "cat"]  # sorted
    assert source.train_images.shape == (6, 8, 8, 3) and source.train_images.dtype == np.uint8
    np.testing.assert_array_equal(source.train_labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(source.train_images[3], written[("train", "cat", 0)])  # PNG
    np.testing.assert_array_equal(source.unlabeled_images[0], written[("train", "cat", 0)])


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    _write_folder(tmp_path / "a", splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"a/test not found"):
        load_image_folder(tmp_path / "a")
    _write_folder(tmp_path / "b", classes=("x", "y"), splits=("train",))
    _write_folder(tmp_path / "b", classes=("x", "z"), splits=("test",))
    with pytest.raises(ValueError, match=r"only in train: \['y'\], only in test: \['z'\]"):
        load_image_folder(tmp_path / "b")
    _write_folder(tmp_path / "c")
    (tmp_path / "c/test/ant/broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Cannot read image file .*c/test/ant/broken.jpg"):
        load_image_folder(tmp_path / "c")
    _write_folder(tmp_path / "d")
    for path in (tmp_path / "d/test/cat").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"d/test/cat contains no images"):
        load_image_folder(tmp_path / "d")


def test_real_offline_cifar10_subset(tmp_path, cifar10_zip):
    with zipfile.ZipFile(cifar10_zip) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        by_class = {}
        for name in names:
            split, label = name.split("/")[:2]
            by_class.setdefault((split, label), []).append(name)
        chosen = [n for key, files in sorted(by_class.items())
                  for n in files[:20 if key[0] == "train" else 10]]
        archive.extractall(tmp_path, members=chosen)
    source = load_source("cifar10", source="folder", data_dir=tmp_path)
    assert source.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                  "frog", "horse", "ship", "truck"]
    assert source.train_images.shape == (200, 32, 32, 3)
    assert source.test_images.shape == (100, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(source.train_labels), [20] * 10)
    assert source.unlabeled_images is None
    assert 40 < source.train_images.mean() < 200  # decoded pixels, not zeros


def test_numpy_source_and_errors():
    images = np.zeros([4, 8, 8, 3], np.uint8)
    arrays = dict(train_images=images, train_labels=[0, 1, 0, 1], test_images=images[:2],
                  test_labels=[1, 0])
    source = load_source("toy", source="numpy", arrays=arrays)
    assert source.class_names == ["0", "1"] and source.train_labels.dtype == np.int64
    with pytest.raises(ValueError, match="uint8"):
        SourceArrays(images.astype(np.float32), [0, 1, 0, 1], images, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="Unknown data source 'web'"):
        load_source("toy", source="web")
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'"):
        load_source("svhn", source="tfds")
    with pytest.raises(ValueError, match="needs arrays"):
        load_source("toy", source="numpy")


def _mock_examples(split, labels, size):
    import tensorflow as tf

    rng = np.random.default_rng(len(split))
    images = rng.integers(0, 256, (len(labels), size, size, 3), np.uint8)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.asarray(labels)})


@pytest.mark.parametrize("name,size,num_classes", [("cifar10", 32, 10), ("stl10", 96, 10)])
def test_tfds_path_offline_with_mock_data(name, size, num_classes):
    import tensorflow_datasets as tfds

    # long-tailed labels injected through as_dataset_fn
    train_labels = np.repeat(np.arange(num_classes), np.arange(num_classes, 0, -1))

    def as_dataset(self, split, *args, **kwargs):
        split = str(split)
        if "unlabelled" in split:
            return _mock_examples(split, np.full([5], -1), size)
        labels = train_labels if "train" in split else np.arange(num_classes)
        return _mock_examples(split, labels, size)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        source = load_source(name, source="tfds")
    np.testing.assert_array_equal(np.bincount(source.train_labels), np.arange(num_classes, 0, -1))
    assert source.train_images.shape[1:] == (size, size, 3)
    assert len(source.class_names) == num_classes
    if name == "stl10":
        assert source.unlabeled_images.shape == (5, 96, 96, 3)
    else:
        assert source.unlabeled_images is None


# ----------------------------------------------------------------------------- offline TFDS


def test_probe_reports_a_refused_connection_quickly():
    from daso_tf.data import sources

    with socket.socket() as server:  # a bound port nobody listens on: connection refused
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        start = time.monotonic()
        problem = sources.probe_download_host(f"http://127.0.0.1:{port}/x.tar.gz", timeout=5)
    assert time.monotonic() - start < 5
    assert problem.startswith(f"127.0.0.1:{port} cannot be reached:")


def test_probe_succeeds_against_a_listening_port():
    from daso_tf.data import sources

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert sources.probe_download_host(f"https://127.0.0.1:{server.getsockname()[1]}/", timeout=5) is None


def test_probe_gives_up_on_a_hanging_dns_lookup_within_its_timeout(monkeypatch):
    from daso_tf.data import sources

    release = threading.Event()

    def hanging_lookup(*args, **kwargs):  # a resolver that never answers
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    start = time.monotonic()
    problem = sources.probe_download_host("https://www.cs.toronto.edu/~kriz/x.tar.gz", timeout=1.0)
    elapsed = time.monotonic() - start
    release.set()
    assert 0.9 < elapsed < 3.0
    assert problem == "www.cs.toronto.edu:443 cannot be reached: no answer within 1 s"


def test_probe_goes_through_the_proxy_the_environment_names(monkeypatch):
    from daso_tf.data import sources

    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(1)
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        # The real host is unresolvable here (tests run offline); the proxy answers.
        assert sources.probe_download_host("https://www.cs.toronto.edu/x.tar.gz", timeout=5) is None


def test_unprepared_unreachable_dataset_fails_fast_naming_dataset_and_data_dir(tmp_path):
    from daso_tf.data import DatasetUnavailableError, check_tfds_available

    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as error:
        check_tfds_available("stl10", str(tmp_path))  # empty: nothing prepared; DNS fails offline
    assert time.monotonic() - start < 30
    message = str(error.value)
    assert f"TFDS dataset 'stl10' is not prepared in the TFDS data_dir {tmp_path}" in message
    assert "ai.stanford.edu:80 cannot be reached" in message
    with pytest.raises(DatasetUnavailableError, match="'cifar100'"):
        load_source("cifar100", source="tfds", data_dir=str(tmp_path))


def test_prepared_or_mocked_datasets_are_not_probed(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    from daso_tf.data import check_tfds_available, sources

    def no_probe(*args, **kwargs):
        raise AssertionError("probed the download host")

    monkeypatch.setattr(sources, "probe_download_host", no_probe)
    with tfds.testing.mock_data(num_examples=2):
        check_tfds_available("cifar10", str(tmp_path))
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    assert check_tfds_available("cifar10", str(tmp_path)) == str(tmp_path)
