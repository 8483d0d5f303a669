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


def test_unlabeled_settings_must_fit_the_data_source(tmp_path):
    import experiments

    stl = experiments.get_experiment("stl10_lt_n150_g10")
    stl.data.num_unlabeled_head = 3000
    with pytest.raises(ConfigError, match=r"^data\.num_unlabeled_head=3000: stl10 has an extra unlabeled split .*"
                                          r"expected -1$"):
        check_data_source(stl.data)
    cifar = experiments.get_experiment("cifar10_lt_n500")
    cifar.data.num_unlabeled_head = -1
    with pytest.raises(ConfigError, match=r"^data\.num_unlabeled_head=-1 asks for the whole extra unlabeled split, "
                                          "but cifar10 has none"):
        check_data_source(cifar.data)
    # A folder source with an unlabeled/ tree is used like STL-10's extra split.
    for split in ("train/a", "test/a", "unlabeled"):
        (tmp_path / split).mkdir(parents=True)
        (tmp_path / split / "0.jpg").write_bytes(b"")  # listed by name, never decoded here
    folder = apply_overrides(experiments.get_experiment("cifar10_lt_n500"),
                             {"data.source": "folder", "data.data_dir": str(tmp_path),
                              "data.num_valid_per_class": "0", "data.num_labeled_head": "1"})
    with pytest.raises(ConfigError, match=r"data\.num_unlabeled_head=4000: data\.data_dir=.* has an extra"):
        check_data_source(folder.data)
    apply_overrides(folder, {"data.num_unlabeled_head": "-1", "data.imbalance_unlabeled": "-1"})
    check_data_source(folder.data)


def test_offline_tfds_is_one_config_error_with_the_folder_alternative(tmp_path):
    # Tests run offline (tests/conftest.py): the download host does not resolve.
    config = apply_overrides(ExperimentConfig(), {"data.data_dir": str(tmp_path)})
    with pytest.raises(ConfigError) as error:
        check_data_source(config.data)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"data.dataset=cifar10: TFDS dataset 'cifar10' is not prepared in the TFDS data_dir "
                              f"{tmp_path}")
    assert "--params_override=data.source=folder,data.data_dir=" in message
