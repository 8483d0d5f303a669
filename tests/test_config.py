"""daso_tf.config: overrides, type coercion, closest-key suggestions, params.yaml round trip."""

import pytest

from daso_tf.config import (ConfigError, ExperimentConfig, apply_overrides, closest_key, guarded_differences,
                            known_keys, parse_overrides, read_params, write_params)

REQUIRED_KEYS = [
    "data.source", "data.data_dir", "data.labeled_batch_size", "data.unlabeled_ratio", "data.seed",
    "model.depth", "model.width", "algorithm.name", "algorithm.warmup_steps", "trainer.train_steps",
    "trainer.eval_interval", "trainer.eval_batches", "trainer.checkpoint_interval",
    "runtime.distribution_strategy", "runtime.virtual_cpu_devices", "runtime.mixed_precision",
    "runtime.jit_compile",
]


def test_issue_keys_exist():
    assert set(REQUIRED_KEYS) <= set(known_keys())


def test_parse_and_apply_overrides_coerces_types():
    config = ExperimentConfig()
    overrides = parse_overrides("trainer.train_steps=2.5e3, data.source=folder,data.data_dir=/x/y,"
                                "runtime.jit_compile=true,algorithm.threshold=0.9,data.imbalance_labeled=150")
    apply_overrides(config, overrides)
    assert config.trainer.train_steps == 2500 and isinstance(config.trainer.train_steps, int)
    assert config.data.source == "folder" and config.data.data_dir == "/x/y"
    assert config.runtime.jit_compile is True
    assert config.algorithm.threshold == 0.9
    assert config.data.imbalance_labeled == 150.0 and isinstance(config.data.imbalance_labeled, float)


def test_optional_value_accepts_null():
    config = ExperimentConfig()
    apply_overrides(config, {"data.data_dir": "/a"})
    apply_overrides(config, {"data.data_dir": "null"})
    assert config.data.data_dir is None


@pytest.mark.parametrize("item, message", [
    ("trainer.train_steps=abc", "trainer.train_steps='abc': expected an integer"),
    ("trainer.train_steps=1.5", "expected an integer"),
    ("runtime.jit_compile=maybe", "expected true or false"),
    ("algorithm.threshold=high", "expected a number"),
])
def test_bad_value_type_names_key_and_expectation(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_overrides(ExperimentConfig(), parse_overrides(item))


@pytest.mark.parametrize("key, suggestion", [
    ("trainer.train_step", "trainer.train_steps"),
    ("train_steps", "trainer.train_steps"),  # section forgotten
    ("data.sead", "data.seed"),
    ("runtime.distribution_stratgy", "runtime.distribution_strategy"),
])
def test_unknown_key_suggests_closest(key, suggestion):
    assert closest_key(key, known_keys()) == suggestion
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'.*did you mean '{suggestion}'"):
        apply_overrides(ExperimentConfig(), {key: "1"})


def test_yaml_file_override_and_later_items_win(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("trainer:\n  train_steps: 40\n  eval_interval: 10\ndata:\n  seed: 3\n")
    overrides = parse_overrides(f"{path},trainer.train_steps=50")
    config = apply_overrides(ExperimentConfig(), overrides)
    assert (config.trainer.train_steps, config.trainer.eval_interval, config.data.seed) == (50, 10, 3)


def test_item_neither_pair_nor_file_is_rejected():
    with pytest.raises(ConfigError, match="'nonsense' is neither key=value nor an existing YAML file"):
        parse_overrides("nonsense")


def test_invalid_yaml_file_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(str(path))


@pytest.mark.parametrize("overrides, message", [
    ({"data.source": "web"}, "data.source='web': expected one of tfds, folder"),
    ({"runtime.distribution_strategy": "tpu"}, "expected one of default, mirrored, multi_worker_mirrored"),
    ({"model.depth": "12"}, "6n\\+4"),
    ({"trainer.eval_interval": "0"}, "trainer.eval_interval=0: expected a positive number"),
    ({"data.source": "folder"}, "needs data.data_dir"),
])
def test_validate_names_the_bad_key(overrides, message):
    config = apply_overrides(ExperimentConfig(), overrides)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_params_round_trip_and_guarded_differences(tmp_path):
    config = apply_overrides(ExperimentConfig(name="x"), {"data.seed": "7", "trainer.train_steps": "30"})
    write_params(config, str(tmp_path))
    stored = read_params(str(tmp_path))
    assert stored == config
    assert guarded_differences(stored, config) == []
    changed = apply_overrides(read_params(str(tmp_path)), {
        "trainer.train_steps": "60", "runtime.distribution_strategy": "mirrored",  # allowed
        "data.data_dir": "/moved/data",  # allowed: where the data lives, not what it is
        "data.seed": "8", "model.width": "4"})  # refused
    assert guarded_differences(stored, changed) == [("data.seed", 7, 8), ("model.width", 2, 4)]


def test_read_params_missing_returns_none(tmp_path):
    assert read_params(str(tmp_path)) is None


def test_runtime_switches_default_to_auto_and_take_explicit_values(tmp_path):
    config = ExperimentConfig()
    assert (config.runtime.jit_compile, config.runtime.augment_on_device,
            config.runtime.steps_per_execution) == ("auto", "auto", "auto")
    apply_overrides(config, parse_overrides("runtime.jit_compile=false,runtime.augment_on_device=on,"
                                            "runtime.steps_per_execution=10"))
    assert (config.runtime.jit_compile, config.runtime.augment_on_device,
            config.runtime.steps_per_execution) == (False, True, 10)
    apply_overrides(config, parse_overrides("runtime.jit_compile=AUTO,runtime.steps_per_execution=auto"))
    assert config.runtime.jit_compile == "auto" and config.runtime.steps_per_execution == "auto"
    write_params(config.validate(), str(tmp_path))  # "auto" round-trips through params.yaml
    stored = read_params(str(tmp_path))
    assert (stored.runtime.jit_compile, stored.runtime.augment_on_device) == ("auto", True)


@pytest.mark.parametrize("item, message", [
    ("runtime.jit_compile=maybe", "runtime.jit_compile='maybe': expected true or false or auto"),
    ("runtime.steps_per_execution=fast", "expected an integer or auto"),
    ("runtime.steps_per_execution=0", "runtime.steps_per_execution=0: expected a positive number or auto"),
    ("runtime.steps_per_execution=3", "trainer.eval_interval=500 must be a multiple of runtime.steps_per_execution=3"),
    ("runtime.steps_per_execution=2,runtime.distribution_strategy=multi_worker_mirrored",
     "runtime.steps_per_execution=2 fails with multi_worker_mirrored"),
])
def test_bad_runtime_switch_values(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ExperimentConfig(), parse_overrides(item)).validate()
