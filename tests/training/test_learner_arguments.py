"""The config -> learner contract (daso_tf.training.learner_arguments, SemiSupervisedModel.hyperparameters)."""

import dataclasses
import types

import pytest

from daso_tf.algorithms import ALGORITHMS, DASO, MixMatchDASO, SemiSupervisedModel, Supervised
from daso_tf.config import AlgorithmConfig, ConfigError, ExperimentConfig, apply_overrides
from daso_tf.training.learner_arguments import (RUN_FILLED, check_learner_keys, config_keys_taken,
                                                learner_arguments, optimizer_parameters)

ALGORITHM_KEYS = {field.name for field in dataclasses.fields(AlgorithmConfig)} - {"name"}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_learner_argument_is_a_config_key(name):
    """A new learner fails here until each of its arguments is an AlgorithmConfig key."""
    algorithm_class = ALGORITHMS[name]
    arguments = set(algorithm_class.hyperparameters()) | set(optimizer_parameters(algorithm_class))
    missing = sorted(arguments - ALGORITHM_KEYS - set(RUN_FILLED))
    assert not missing, (f"{name} takes {missing}, which are not daso_tf.config.AlgorithmConfig keys: add them "
                         "(Optional, default None, with their constraint)")


def test_every_algorithm_key_is_taken_by_some_learner():
    taken = set()
    for algorithm_class in ALGORITHMS.values():
        taken |= {key.split(".", 1)[1] for key in config_keys_taken(algorithm_class)}
    assert taken == ALGORITHM_KEYS


def test_hyperparameters_are_the_constructor_defaults_along_the_class_hierarchy():
    mixmatch_daso = MixMatchDASO.hyperparameters()
    # own arguments, MixMatch's (lambda_u 100 through **kwargs) and the base's ema_decay
    assert (mixmatch_daso["warmup_steps"], mixmatch_daso["lambda_u"], mixmatch_daso["ema_decay"]) == (5000, 100.0, 0.999)
    assert Supervised.hyperparameters() == {"ema_decay": 0.0, "logit_adjust": False, "logit_adjust_tau": 1.0}
    assert DASO.hyperparameters()["threshold"] == 0.95 and DASO.hyperparameters()["abc"] is False
    for algorithm_class in ALGORITHMS.values():
        assert not set(algorithm_class.hyperparameters()) & set(SemiSupervisedModel.NOT_HYPERPARAMETERS)
    assert optimizer_parameters(Supervised) == ("learning_rate", "momentum", "nesterov", "weight_decay", "total_steps")


def _config(**algorithm):
    config = apply_overrides(ExperimentConfig(), {"trainer.train_steps": "40", "data.seed": "7"})
    for key, value in algorithm.items():
        setattr(config.algorithm, key, value)
    return config


def test_only_set_keys_the_learner_takes_are_passed_and_the_run_fills_steps_and_seed():
    fixmatch = learner_arguments(_config(name="fixmatch", threshold=0.9, dist_temperature=0.3, learning_rate=0.01))
    assert fixmatch.model_kwargs == {"threshold": 0.9}
    assert fixmatch.optimizer_kwargs == {"learning_rate": 0.01, "total_steps": 40}
    assert fixmatch.not_taken == {"algorithm.dist_temperature": 0.3}
    daso = learner_arguments(_config(name="daso", dist_temperature=0.3, abc=True))
    assert daso.model_kwargs == {"dist_temperature": 0.3, "abc": True, "total_steps": 40, "seed": 7}
    assert daso.not_taken == {} and daso.optimizer_kwargs == {"total_steps": 40}
    assert learner_arguments(_config(name="mixmatch")).model_kwargs == {"seed": 7}
    assert learner_arguments(_config(name="supervised")).model_kwargs == {}


def test_user_keys_the_learner_does_not_take_are_refused():
    config = _config(name="fixmatch", warmup_steps=10, dist_temperature=0.3)
    check_learner_keys(config, ["algorithm.name"])  # experiment-set keys pass (and are reported)
    with pytest.raises(ConfigError) as error:
        check_learner_keys(config, ["algorithm.warmup_steps"])
    message = str(error.value)
    assert message.startswith("algorithm.warmup_steps=10: learner 'fixmatch' (algorithm.name) does not take this key")
    assert "it takes algorithm.ema_decay, algorithm.lambda_u, algorithm.learning_rate" in message
    assert "dist_temperature" not in message  # only the user's key is named
    with pytest.raises(ConfigError, match="algorithm.name='fixmach': expected one of .*daso.*fixmatch"):
        check_learner_keys(_config(name="fixmach"), [])


def test_default_optimizer_overrides_and_exact_recorded_learning_rate():
    base = SemiSupervisedModel.default_optimizer(learning_rate=0.01, momentum=0.5, nesterov=False, weight_decay=0.0)
    config = base.get_config()
    assert (config["learning_rate"], config["momentum"], config["nesterov"], config["l2"]) == (0.01, 0.5, False, 0.0)
    assert SemiSupervisedModel.default_optimizer().get_config()["learning_rate"] == 0.03  # not 0.029999999329...
    # Supervised: an overridden learning rate scales the reference schedule (warm-up 6250, x0.01 at 199999)
    schedule = Supervised.default_optimizer(learning_rate=0.05)._learning_rate
    assert schedule.value_at(3125) == pytest.approx(0.025) and schedule.value_at(6250) == pytest.approx(0.05)
    assert schedule.value_at(199999) == pytest.approx(5e-4) and schedule.value_at(225000) == pytest.approx(5e-6)
    assert Supervised.default_optimizer()._learning_rate.base_learning_rate == 0.1


def test_supervised_schedule_is_the_reference_at_250k_steps_and_stretched_to_shorter_runs():
    reference = Supervised.default_optimizer(total_steps=250_000)._learning_rate.get_config()
    assert (reference["warmup_steps"], list(reference["milestones"])) == (6250, [199999, 225000])
    # a 5000-step run: the same fractions of the run (6250/250k, 199999/250k, 225000/250k)
    short = Supervised.default_optimizer(total_steps=5000)._learning_rate
    assert (short.get_config()["warmup_steps"], list(short.get_config()["milestones"])) == (125, [4000, 4500])
    assert short.value_at(125) == pytest.approx(0.1) and short.value_at(3999) == pytest.approx(0.1)
    assert short.value_at(4000) == pytest.approx(1e-3) and short.value_at(4500) == pytest.approx(1e-5)


def test_build_model_gives_the_learner_its_keys_and_the_optimiser_overrides():
    import tensorflow as tf

    from daso_tf.training.loop import build_model

    lt_data = types.SimpleNamespace(class_names=["a", "b", "c"], labeled_counts=[6, 3, 1])

    def build(**algorithm):
        config = _config(**algorithm)
        apply_overrides(config, {"model.depth": "10", "model.width": "1", "data.image_size": "8"})
        return build_model(config.validate(), lt_data, tf.distribute.get_strategy())

    supervised = build(name="supervised", learning_rate=0.2, weight_decay=0.0)
    assert supervised.ema_decay == 0.0 and supervised.optimizer.l2 == 0.0
    assert supervised.optimizer._learning_rate.base_learning_rate == 0.2
    mixmatch = build(name="mixmatch", lambda_u=3.0, nesterov=False)
    assert (mixmatch.lambda_u, mixmatch.mixup_alpha, mixmatch.seed, mixmatch.rampup_steps) == (3.0, 0.5, 7, 4000)
    assert mixmatch.optimizer.nesterov is False and mixmatch.optimizer.get_config()["learning_rate"] == 0.03
