"""Backbones."""

from daso_tf.models.reference_weights import convert_reference_state_dict, load_reference_checkpoint, load_reference_weights  # noqa: F401
from daso_tf.models.wide_resnet import WideResNet

__all__ = ["WideResNet"]
