"""Experiment registry: a name -> a factory returning a fresh ``ExperimentConfig``.

The TF Model Garden pattern without depending on it: each benchmark module
(``cifar10.py``, ``cifar100.py``, ``stl10.py``) registers one factory per paper setting with
the published top-1 it should reach. ``run.py --experiment=<name>`` looks it up here.
"""

import dataclasses

from daso_tf.config import ConfigError


@dataclasses.dataclass(frozen=True)
class ExperimentEntry:
    """A registered experiment: its factory plus what the paper reports for it."""

    name: str
    factory: object
    paper_top1: object  # the experiment's learner as published (FixMatch + DASO: median-20 top-1 (%), mean of 3 seeds); None: not a paper setting
    paper_source: str  # which paper and where in it the number is (or why there is none)
    description: str


class UnknownExperimentError(ConfigError):
    """``--experiment`` names nothing registered; the message lists what is."""


_REGISTRY = {}


def register(name, *, paper_top1, paper_source, description):
    """Decorator: registers ``factory() -> ExperimentConfig`` under ``name``."""

    def decorate(factory):
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        _REGISTRY[name] = ExperimentEntry(name, factory, paper_top1, paper_source, description)
        return factory

    return decorate


def get_entry(name):
    if name not in _REGISTRY:
        known = ", ".join(list_experiments())
        raise UnknownExperimentError(f"unknown experiment '{name}'; known experiments: {known}")
    return _REGISTRY[name]


def get_experiment(name):
    """A fresh (mutable) config for ``name``; ``config.name`` is set to ``name``."""
    config = get_entry(name).factory()
    config.name = name
    return config.validate()


def list_experiments():
    return list(_REGISTRY)  # registration order: cifar10, cifar100, stl10


def experiment_table():
    """Markdown table of the registered experiments (``run.py --list_experiments``)."""
    lines = ["| experiment | setting | paper top-1 (the experiment's learner) |", "|---|---|---|"]
    for name in list_experiments():
        entry = _REGISTRY[name]
        paper = "-" if entry.paper_top1 is None else f"{entry.paper_top1:.1f}"
        lines.append(f"| {name} | {entry.description} | {paper} ({entry.paper_source}) |")
    return "\n".join(lines)
