"""Stateful DASO layers: the class-wise prototype queue and the pseudo-label histogram."""

from daso_tf.layers.prototype_queue import PrototypeQueue
from daso_tf.layers.pseudo_label_histogram import PseudoLabelHistogram

__all__ = ["PrototypeQueue", "PseudoLabelHistogram"]
