"""daso_tf.training.model_dir: resume guard, eval/export config, writability, data dir."""

import os

import pytest

from daso_tf.config import ConfigError, ExperimentConfig, apply_overrides, write_params
from daso_tf.training.model_dir import check_data_source, check_model_dir, load_run_config


def _stored_run(tmp_path):
    config = apply_overrides(ExperimentConfig(name="tiny"), {"model.depth": "10", "trainer.train_steps": "8"})
    write_params(config, str(tmp_path))
    return config


def test_resume_allows_trainer_and_runtime_changes(tmp_path):
    config = _stored_run(tmp_path)
    apply_overrides(config, {"trainer.train_steps": "16", "runtime.distribution_strategy": "mirrored"})
    assert check_model_dir(config, str(tmp_path), "train_and_eval").trainer.train_steps == 8


def test_resume_refuses_guarded_changes_and_names_keys(tmp_path):
    config = apply_overrides(_stored_run(tmp_path), {"data.seed": "3", "algorithm.threshold": "0.9"})
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError, match=r"refusing to resume: algorithm.threshold \(run has unset, requested 0.9\), "
                                          r"data.seed \(run has 0, requested 3\)"):
        check_model_dir(config, str(tmp_path), "train_and_eval")
    assert sorted(os.listdir(tmp_path)) == before


def test_eval_config_comes_from_params_yaml(tmp_path):
    _stored_run(tmp_path)
    config = load_run_config(str(tmp_path), {"runtime.jit_compile": "true"}, "eval")
    assert config.model.depth == 10 and config.runtime.jit_compile is True
    with pytest.raises(ConfigError, match="cannot change the settings.*model.width"):
        load_run_config(str(tmp_path), {"model.width": "4"}, "export")
    with pytest.raises(ConfigError, match="needs a trained run"):
        load_run_config(str(tmp_path / "nothing"), {}, "eval")


def test_unwritable_model_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is not writable"):
        check_model_dir(ExperimentConfig(), str(blocker / "run"), "train")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_model_dir(ExperimentConfig(), str(blocker), "train")


def test_missing_data_dir(tmp_path):
    config = apply_overrides(ExperimentConfig(), {"data.source": "folder", "data.data_dir": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="data.data_dir=.*nope: directory not found"):
        check_data_source(config.data)
    (tmp_path / "empty").mkdir()
    config.data.data_dir = str(tmp_path / "empty")
    with pytest.raises(ConfigError, match="has no train/ subdirectory"):
        check_data_source(config.data)
