"""Test-wide settings: quiet TensorFlow, deterministic seeds, paths to shared fixtures."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Never let a test reach a download path (TF_NOTES.md: tfds retries DNS for minutes).
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-data-dir-for-tests")
os.environ.setdefault("NO_GCE_CHECK", "true")

import pytest  # noqa: E402

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
