"""daso_tf: DASO (CVPR 2022) for class-imbalanced semi-supervised learning in Keras 3 / TF."""

from daso_tf.algorithms import DASO, FixMatch, SemiSupervisedModel, get_algorithm
from daso_tf.models import WideResNet
from daso_tf.optimizers import CoupledL2SGD, reference_sgd

__all__ = ["DASO", "FixMatch", "SemiSupervisedModel", "WideResNet", "CoupledL2SGD",
           "get_algorithm", "reference_sgd"]
