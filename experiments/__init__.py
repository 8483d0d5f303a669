"""The registered experiments, as the checkout's top-level ``experiments`` package.

One registered config per paper setting lives in the library (``daso_tf/experiments/``:
``cifar10.py``, ``cifar100.py``, ``stl10.py``) so that the installed ``daso-tf`` command knows
them too; this package re-exports the registry for code that runs from a checkout.
"""

from daso_tf.experiments import *  # noqa: F401,F403
from daso_tf.experiments import __all__  # noqa: F401
