"""Learners on the shared SemiSupervisedModel base, registered by name."""

from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.algorithms.daso import DASO
from daso_tf.algorithms.fixmatch import FixMatch

ALGORITHMS = {
    "fixmatch": FixMatch,
    "daso": DASO,
}


def get_algorithm(name):
    """The learner class registered as ``name`` (e.g. "daso", "fixmatch")."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"Unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}.") from None


__all__ = ["ALGORITHMS", "DASO", "FixMatch", "SemiSupervisedModel", "get_algorithm"]
