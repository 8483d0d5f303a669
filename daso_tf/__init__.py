"""daso_tf: DASO (CVPR 2022) for class-imbalanced semi-supervised learning in Keras 3 / TF.

The public names are imported lazily, so that ``import daso_tf.config`` (and run.py's
flag checking) does not pay for importing TensorFlow.
"""

from daso_tf._lazy import lazy_getattr
from daso_tf.version import __version__

_PUBLIC = {
    "DASO": "daso_tf.algorithms",
    "FixMatch": "daso_tf.algorithms",
    "SemiSupervisedModel": "daso_tf.algorithms",
    "Supervised": "daso_tf.algorithms",
    "FixMatchABC": "daso_tf.algorithms",
    "ReMixMatch": "daso_tf.algorithms",
    "ReMixMatchDASO": "daso_tf.algorithms",
    "MeanTeacher": "daso_tf.algorithms",
    "MeanTeacherDASO": "daso_tf.algorithms",
    "MixMatch": "daso_tf.algorithms",
    "MixMatchDASO": "daso_tf.algorithms",
    "DebiasPL": "daso_tf.algorithms",
    "ACR": "daso_tf.algorithms",
    "PseudoLabel": "daso_tf.algorithms",
    "USADTM": "daso_tf.algorithms",
    "CRT": "daso_tf.algorithms",
    "get_algorithm": "daso_tf.algorithms",
    "ALGORITHMS": "daso_tf.algorithms",
    "WideResNet": "daso_tf.models",
    "CoupledL2SGD": "daso_tf.optimizers",
    "reference_sgd": "daso_tf.optimizers",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


__getattr__ = lazy_getattr(__name__, _PUBLIC, globals())


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
