"""Shared fixtures for the export tests: one small stand-in network exported once."""

import pytest
import tensorflow as tf
from export_test_utils import CLASS_NAMES, IMAGE_SIZE, MODEL_NAME, build_stand_in_network

from daso_tf.serving import export_saved_model


@pytest.fixture(scope="session")
def network():
    return build_stand_in_network()


@pytest.fixture(scope="session")
def exported(network, tmp_path_factory):
    """(export_dir, version_dir) of one export reused by every test that only reads it."""
    export_dir = tmp_path_factory.mktemp("serving")
    version_dir = export_saved_model(
        network, export_dir, model_name=MODEL_NAME, class_names=CLASS_NAMES, image_size=IMAGE_SIZE
    )
    return export_dir, version_dir


@pytest.fixture(scope="session")
def signatures(exported):
    return tf.saved_model.load(exported[1]).signatures
