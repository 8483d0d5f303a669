"""Fixtures shared by the run.py end-to-end tests."""

import pytest

from tests.e2e.runs import extract_cifar_folder


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory, cifar10_zip):
    """A few JPEGs per class of the offline CIFAR-10 copy (tests.e2e.runs.TRAIN_PER_CLASS / TEST_PER_CLASS)."""
    return extract_cifar_folder(cifar10_zip, tmp_path_factory.mktemp("cifar10_folder"))
