"""The config -> learner contract: which ``algorithm.*`` keys reach the learner, and how.

- ``algorithm.<arg>`` is the learner's constructor argument ``<arg>`` (its
  hyper-parameters, ``SemiSupervisedModel.hyperparameters()``) or an argument of its
  ``default_optimizer`` (learning_rate, momentum, nesterov, weight_decay). Unset (None)
  means the learner's default, which is the reference value: nothing copies defaults
  between learners.
- The run fills in ``RUN_FILLED`` itself for learners that take them: ``total_steps`` =
  trainer.train_steps, ``seed`` = data.seed.
- Only keys that are set are passed, and only to a learner that takes them. A set key the
  learner does not take is refused when the user set it (``check_learner_keys``, called by
  run.py before anything is written) and reported once in the start-up summary, not passed,
  when the experiment (or the run being resumed) set it.
- The run records what it trained (``learner_record``): the learner's ``get_config()``
  (every hyper-parameter, the backbone left out) and its optimiser's ``get_config()``.
"""

import dataclasses
import inspect

from daso_tf.config import ConfigError

# Hyper-parameters that are not config keys: the run derives them from other keys.
RUN_FILLED = ("total_steps", "seed")


@dataclasses.dataclass
class LearnerArguments:
    """What the run passes to the learner named by ``algorithm.name``."""

    algorithm_class: type
    model_kwargs: dict  # constructor keyword arguments
    optimizer_kwargs: dict  # default_optimizer keyword arguments
    not_taken: dict  # {"algorithm.<key>": value}: set, but the learner does not take it


def learner_class(name):
    """The learner registered as ``name``; ConfigError (listing the registered ones) if none."""
    from daso_tf.algorithms import ALGORITHMS

    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm.name={name!r}: expected one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]


def optimizer_parameters(algorithm_class):
    """The argument names of ``algorithm_class.default_optimizer``."""
    return tuple(inspect.signature(algorithm_class.default_optimizer).parameters)


def config_keys_taken(algorithm_class):
    """The ``algorithm.*`` keys (besides ``name``) the learner takes, sorted."""
    names = set(algorithm_class.hyperparameters()) | set(optimizer_parameters(algorithm_class))
    return sorted(f"algorithm.{name}" for name in names - set(RUN_FILLED))


def learner_arguments(config):
    """``LearnerArguments`` for ``config`` (an ``ExperimentConfig``)."""
    algorithm_class = learner_class(config.algorithm.name)
    hyperparameters = algorithm_class.hyperparameters()
    optimizer_names = optimizer_parameters(algorithm_class)
    values = {name: value for name, value in dataclasses.asdict(config.algorithm).items()
              if name != "name" and value is not None}
    values.update({"total_steps": config.trainer.train_steps, "seed": config.data.seed})
    return LearnerArguments(
        algorithm_class=algorithm_class,
        model_kwargs={name: value for name, value in values.items() if name in hyperparameters},
        optimizer_kwargs={name: value for name, value in values.items() if name in optimizer_names},
        not_taken={f"algorithm.{name}": value for name, value in values.items()
                   if name not in hyperparameters and name not in optimizer_names and name not in RUN_FILLED})


def check_learner_keys(config, user_keys):
    """Raises ConfigError when a key in ``user_keys`` (set by the user) is an algorithm key
    the chosen learner does not take; also refuses an unknown ``algorithm.name``."""
    arguments = learner_arguments(config)
    refused = [key for key in sorted(user_keys) if key in arguments.not_taken]
    if refused:
        name = config.algorithm.name
        settings = ", ".join(f"{key}={arguments.not_taken[key]!r}" for key in refused)
        raise ConfigError(f"{settings}: learner {name!r} (algorithm.name) does not take "
                          f"{'this key' if len(refused) == 1 else 'these keys'}; it takes "
                          f"{', '.join(config_keys_taken(arguments.algorithm_class))}")


def learner_record(name, model):
    """``{"name", "config", "optimizer"}``: what the run trained (results.json, start-up summary)."""
    config = model.get_config()
    config.pop("backbone", None)
    return {"name": name, "config": config, "optimizer": model.optimizer.get_config()}


# Entries of a learner record that describe the data or the Keras object, not hyper-parameters.
_NOT_HYPERPARAMETERS = {"name", "trainable", "dtype", "num_classes", "normalization", "labeled_class_counts",
                        "class_names"}


def describe_learner(record):
    """One line of a learner record for the start-up summary: the learner's hyper-parameters and
    its optimiser's settings (``key=value``; unset Keras optimiser options left out)."""
    hyper = " ".join(f"{key}={value}" for key, value in record["config"].items() if key not in _NOT_HYPERPARAMETERS)
    optimizer = dict(record["optimizer"])
    optimizer_name = optimizer.pop("name", "optimizer")
    settings = " ".join(f"{key}={value}" for key, value in optimizer.items()
                        if value not in (None, False) and key not in ("ema_momentum",))
    return f"{record['name']}: {hyper} | {optimizer_name}: {settings}"
