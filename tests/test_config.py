"""daso_tf.config: overrides, type coercion, closest-key suggestions, params.yaml round trip."""

import re

import pytest

from daso_tf.config import (ConfigError, ExperimentConfig, apply_overrides, changed_keys, closest_key, fill_unset,
                            guarded_differences, known_keys, parse_overrides, read_params, write_params)

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
    ({"trainer.eval_interval": "0"}, "trainer.eval_interval=0: expected an integer >= 1"),
    ({"data.source": "folder"}, "needs data.data_dir"),
    ({"data.split_protocol": "acr"}, "data.num_valid_per_class=500: data.split_protocol=acr has no validation split"),
    ({"data.split_protocol": "random"}, "data.split_protocol='random': expected one of daso, acr"),
    ({"model.batch_norm_momentum": "1"}, "model.batch_norm_momentum=1.0: expected a number in \\[0, 1\\)"),
    ({"algorithm.lr_schedule": "step"}, "algorithm.lr_schedule='step': expected one of constant, cosine"),
    ({"algorithm.qhat_momentum": "1"}, "algorithm.qhat_momentum=1.0: expected a number in \\[0, 1\\)"),
    ({"algorithm.adaptation_period": "0"}, "algorithm.adaptation_period=0: expected an integer >= 1"),
    ({"algorithm.tau1": "-1"}, "algorithm.tau1=-1.0: expected a number >= 0"),
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
    ("runtime.steps_per_execution=0", "runtime.steps_per_execution=0: expected an integer >= 1 or auto"),
    ("runtime.steps_per_execution=3", "trainer.eval_interval=500 must be a multiple of runtime.steps_per_execution=3"),
    ("runtime.steps_per_execution=2,runtime.distribution_strategy=multi_worker_mirrored",
     "runtime.steps_per_execution=2 fails with multi_worker_mirrored"),
])
def test_bad_runtime_switch_values(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ExperimentConfig(), parse_overrides(item)).validate()


# ----------------------------------------------------------------------------- value constraints

FREE_TEXT_KEYS = {"data.data_dir", "export.export_dir", "algorithm.base_run"}  # paths: checked where they are used


def test_every_non_boolean_key_declares_what_it_allows():
    import dataclasses

    config = ExperimentConfig()
    for section in ("data", "model", "algorithm", "trainer", "runtime", "export"):
        for field in dataclasses.fields(getattr(config, section)):
            key = f"{section}.{field.name}"
            if key in FREE_TEXT_KEYS or key == "algorithm.name" or "bool" in str(field.type):
                continue
            assert field.metadata.get("allowed") is not None, f"{key} has no constraint"


@pytest.mark.parametrize("key, good, bad, message", [
    ("algorithm.threshold", ["0", "1", "0.95"], ["1.0001", "-0.1", "nan"], "number in [0, 1]"),
    ("algorithm.ema_decay", ["0", "0.999"], ["1", "1.5", "-0.001"], "expected a number in [0, 1)"),
    ("algorithm.momentum", ["0", "0.9"], ["1"], "expected a number in [0, 1)"),
    ("algorithm.learning_rate", ["1e-9", "0.03"], ["0", "-0.1"], "expected a number > 0"),
    ("algorithm.learning_rate", [], ["inf", ".inf", "nan"], "expected a finite number > 0"),
    ("algorithm.dist_temperature", ["0.3"], ["0", "-1"], "expected a number > 0"),
    ("algorithm.lambda_u", ["0", "100"], ["-1"], "expected a number >= 0"),
    ("algorithm.queue_size", ["1"], ["0"], "expected an integer >= 1"),
    ("algorithm.warmup_steps", ["0", "5000"], ["-1"], "expected an integer >= 0"),
    ("algorithm.sampler_beta", ["0", "0.999", "1"], ["1.5", "-0.1"], "expected a number in [0, 1]"),
    ("algorithm.rampup_ratio", ["0", "0.4"], ["-0.4"], "expected a number >= 0"),
    ("algorithm.lambda_uc", ["0", "0.1"], ["-0.1"], "expected a number >= 0"),
    ("data.imbalance_labeled", ["1", "150"], ["0.5", "-1"], "expected a number >= 1"),
    ("data.num_unlabeled_head", ["1"], ["0", "-1"], "or -1 (the whole extra unlabeled split) with data.dataset=stl10"),
    ("data.augmentation", ["reference", "keras_cv", "keras"], ["bogus"], "expected one of reference, keras_cv, keras"),
    ("data.seed", ["0", "4294967295"], ["-1", "4294967296"], "expected an integer in [0, 4294967295]"),
    ("export.model_name", ["daso", "daso-v1.2_b"], [".hidden", "a/b", "a b"], "expected a name of letters"),
    ("export.version", ["1"], ["0"], "expected an integer >= 1"),
    ("algorithm.darp_estimate", ["cifar10_l_1500_100_ul_3000_1", "runs/e/darp_estimate.json", "q.npy"],
     ["q.txt", "cifar100_l_150_10_ul_300_1"], "expected a reference estimate (cifar10_l_1500_100_ul_3000_1, "),
    ("algorithm.darp_warmup_ratio", ["0", "0.4", "1"], ["1.5"], "expected a number in [0, 1]"),
    ("algorithm.num_generations", ["1", "5"], ["0"], "expected an integer >= 1"),
])
def test_value_constraints_accept_and_refuse(key, good, bad, message):
    for value in good:
        apply_overrides(ExperimentConfig(), {key: value}).validate()
    for value in bad:
        config = apply_overrides(ExperimentConfig(), {key: value})
        with pytest.raises(ConfigError, match=re.escape(message)) as error:
            config.validate()
        assert str(error.value).startswith(f"{key}=")


def test_whole_extra_split_is_legal_for_stl10_only():
    stl10 = {"data.dataset": "stl10", "data.num_unlabeled_head": "-1", "data.imbalance_unlabeled": "-1"}
    apply_overrides(ExperimentConfig(), stl10).validate()
    with pytest.raises(ConfigError, match=r"data.imbalance_unlabeled=-1.0: expected a number >= 1, or -1"):
        apply_overrides(ExperimentConfig(), {"data.imbalance_unlabeled": "-1"}).validate()


def test_algorithm_keys_are_unset_by_default_and_round_trip_through_params_yaml(tmp_path):
    config = ExperimentConfig(name="x")
    assert config.algorithm.name == "daso"
    assert all(value is None for key, value in config.flat().items() if key.startswith("algorithm.")
               and key != "algorithm.name")
    apply_overrides(config, {"algorithm.lambda_u": "50"})
    write_params(config, str(tmp_path))
    assert "threshold: null" in (tmp_path / "params.yaml").read_text()
    stored = read_params(str(tmp_path))
    assert stored == config and stored.algorithm.threshold is None and stored.algorithm.lambda_u == 50.0


def test_unset_keys_keep_the_stored_value_and_are_no_difference(tmp_path):
    # A params.yaml written before the algorithm keys became optional holds every value.
    old_style = ExperimentConfig(name="x")
    apply_overrides(old_style, {"algorithm.threshold": "0.95", "algorithm.warmup_steps": "5000",
                                "algorithm.learning_rate": "0.03"})
    write_params(old_style, str(tmp_path))
    stored = read_params(str(tmp_path))
    requested = ExperimentConfig(name="x")
    assert guarded_differences(stored, requested) == []
    fill_unset(requested, stored)
    assert (requested.algorithm.threshold, requested.algorithm.warmup_steps) == (0.95, 5000)
    assert requested.algorithm.lambda_u is None  # unset in both
    stored.data.data_dir, stored.export.version = "/old/mount", 3
    assert fill_unset(ExperimentConfig(), stored).data.data_dir is None  # may change on resume: not filled
    assert fill_unset(ExperimentConfig(), stored).export.version is None
    # a value that is set must match
    changed = apply_overrides(ExperimentConfig(name="x"), {"algorithm.threshold": "0.9"})
    assert guarded_differences(stored, changed) == [("algorithm.threshold", 0.95, 0.9)]


def test_changed_keys_ignore_overrides_that_repeat_the_baseline():
    experiment = apply_overrides(ExperimentConfig(), {"algorithm.dist_temperature": "1.5"})
    stored = apply_overrides(ExperimentConfig(), {"algorithm.warmup_steps": "7"})
    config = apply_overrides(ExperimentConfig(), {"algorithm.dist_temperature": "1.5", "algorithm.warmup_steps": "7",
                                                  "algorithm.lambda_u": "2"})
    overrides = ["algorithm.dist_temperature", "algorithm.warmup_steps", "algorithm.lambda_u"]
    assert changed_keys(config, overrides, experiment, None) == ["algorithm.lambda_u", "algorithm.warmup_steps"]
    assert changed_keys(config, overrides, experiment, stored) == ["algorithm.lambda_u"]
