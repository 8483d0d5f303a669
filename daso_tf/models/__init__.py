"""Backbones."""

from daso_tf.models.wide_resnet import WideResNet

__all__ = ["WideResNet"]
