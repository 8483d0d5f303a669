"""Runs and exports record the code that produced them (daso_tf version, git commit, TF/Keras)."""

import re
import subprocess

import pytest
import yaml

from daso_tf import config as config_lib
from daso_tf.provenance import provenance
from tests.conftest import REPO_ROOT


def test_version_is_the_one_in_version_py():
    import daso_tf

    text = (REPO_ROOT / "daso_tf" / "version.py").read_text()
    assert daso_tf.__version__ == re.search(r'__version__ = "([^"]+)"', text).group(1)
    assert provenance()["daso_tf"] == daso_tf.__version__


def test_checkout_records_its_git_commit():
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    record = provenance()
    assert record["git_commit"] == head
    assert isinstance(record["git_dirty"], bool)


def test_library_versions_are_recorded():
    import keras
    import tensorflow as tf

    record = provenance()
    assert (record["tensorflow"], record["keras"]) == (tf.__version__, keras.__version__)


def test_params_yaml_records_provenance_and_reads_back_without_it(tmp_path):
    config = config_lib.ExperimentConfig(name="x")
    config.data.seed = 3
    path = config_lib.write_params(config, str(tmp_path))
    stored = yaml.safe_load(open(path))
    assert stored["provenance"]["daso_tf"] == provenance()["daso_tf"]
    again = config_lib.read_params(str(tmp_path))
    assert again.flat() == config.flat()
    # Re-applying a run's params.yaml as an override (README) ignores the record too.
    assert "provenance.daso_tf" not in config_lib.parse_overrides(path)


def test_results_json_records_provenance():
    from daso_tf.training.results import EvaluationHistory, results_payload

    payload = results_payload(config=config_lib.ExperimentConfig(name="x"), history=EvaluationHistory(), step=0,
                              finished=False, wall_time_s=0.0)
    assert payload["provenance"]["daso_tf"] == provenance()["daso_tf"]
