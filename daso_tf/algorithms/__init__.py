"""Learners on the shared SemiSupervisedModel base, registered by name."""

from daso_tf.algorithms.acr import ACR
from daso_tf.algorithms.base import SemiSupervisedModel
from daso_tf.algorithms.crt import CRT
from daso_tf.algorithms.daso import DASO
from daso_tf.algorithms.debiaspl import DebiasPL
from daso_tf.algorithms.fixmatch import FixMatch
from daso_tf.algorithms.fixmatch_abc import FixMatchABC
from daso_tf.algorithms.mean_teacher import MeanTeacher
from daso_tf.algorithms.mean_teacher_daso import MeanTeacherDASO
from daso_tf.algorithms.mixmatch import MixMatch
from daso_tf.algorithms.mixmatch_daso import MixMatchDASO
from daso_tf.algorithms.pseudo_label import PseudoLabel
from daso_tf.algorithms.remixmatch import ReMixMatch
from daso_tf.algorithms.remixmatch_daso import ReMixMatchDASO
from daso_tf.algorithms.supervised import Supervised
from daso_tf.algorithms.usadtm import USADTM

ALGORITHMS = {
    "fixmatch": FixMatch,
    "daso": DASO,
    "supervised": Supervised,
    "fixmatch_abc": FixMatchABC,
    "remixmatch": ReMixMatch,
    "remixmatch_daso": ReMixMatchDASO,
    "meanteacher": MeanTeacher,
    "meanteacher_daso": MeanTeacherDASO,
    "mixmatch": MixMatch,
    "mixmatch_daso": MixMatchDASO,
    "debiaspl": DebiasPL,
    "acr": ACR,
    "pseudo_label": PseudoLabel,
    "usadtm": USADTM,
    "crt": CRT,
}


def get_algorithm(name):
    """The learner class registered as ``name`` (e.g. "daso", "fixmatch")."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"Unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}.") from None


__all__ = ["ACR", "ALGORITHMS", "CRT", "DASO", "DebiasPL", "FixMatch", "FixMatchABC", "MeanTeacher",
           "MeanTeacherDASO", "MixMatch", "MixMatchDASO", "PseudoLabel", "ReMixMatch", "ReMixMatchDASO",
           "SemiSupervisedModel", "Supervised", "USADTM", "get_algorithm"]
