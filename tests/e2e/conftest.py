"""Fixtures of the run.py end-to-end tests: the offline image folder and one reference run.

Session-scoped: the uninterrupted tiny run is trained once and is the reference of every
e2e module (resumes, kills, faults, other device layouts). Tests copy it before changing it.
"""

import pytest

from tests.e2e.runs import TINY, extract_cifar_folder, run_py


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory, cifar10_zip):
    """A few JPEGs per class of the offline CIFAR-10 copy (tests.e2e.runs.TRAIN_PER_CLASS / TEST_PER_CLASS)."""
    return extract_cifar_folder(cifar10_zip, tmp_path_factory.mktemp("cifar10_folder"))


@pytest.fixture(scope="session")
def overrides(cifar_folder):
    return f"data.source=folder,data.data_dir={cifar_folder},{TINY}"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, overrides):
    model_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_py(model_dir, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result
