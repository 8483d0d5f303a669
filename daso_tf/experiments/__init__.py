"""Registered experiments (one per paper setting). ``get_experiment(name)`` -> ExperimentConfig."""

from daso_tf.experiments import cifar10, cifar100, stl10  # noqa: F401  (importing registers them, in this order)
from daso_tf.experiments.registry import (
    UnknownExperimentError,
    experiment_table,
    get_entry,
    get_experiment,
    list_experiments,
    register,
)

__all__ = [
    "UnknownExperimentError",
    "experiment_table",
    "get_entry",
    "get_experiment",
    "list_experiments",
    "register",
]
