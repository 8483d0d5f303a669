"""Test-wide settings: quiet TensorFlow, deterministic seeds, paths to shared fixtures."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Never let a test reach a download path (tfds retries DNS for minutes when offline).
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-data-dir-for-tests")
os.environ.setdefault("NO_GCE_CHECK", "true")

import socket  # noqa: E402

import pytest  # noqa: E402

_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}
_real_getaddrinfo = socket.getaddrinfo


def _offline_getaddrinfo(host, *args, **kwargs):
    # Tests run offline: a name that is not local fails like it does without a network,
    # so nothing in-process (e.g. the TFDS download probe) can reach a real host.
    if isinstance(host, bytes):
        host = host.decode()
    if host not in _LOCAL_HOSTS:
        raise socket.gaierror(socket.EAI_NONAME, f"tests run offline; {host} is not resolved")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _offline_getaddrinfo

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("DASO_SHARED_DIR", REPO_ROOT.parent / "shared"))
GOLDEN_DIR = SHARED_DIR / "golden"
DATASETS_DIR = SHARED_DIR / "datasets"


@pytest.fixture(scope="session")
def golden_dir():
    if not GOLDEN_DIR.is_dir():
        pytest.fail(f"golden reference directory not found: {GOLDEN_DIR} (set DASO_SHARED_DIR)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def cifar10_zip():
    path = DATASETS_DIR / "cifar10_jpeg.zip"
    if not path.is_file():
        pytest.fail(f"offline CIFAR-10 copy not found: {path} (set DASO_SHARED_DIR)")
    return path
