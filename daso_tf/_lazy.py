"""Lazy package attributes (PEP 562), so that light imports do not pay for TensorFlow."""

import importlib


def lazy_getattr(package, public, namespace):
    """A module ``__getattr__`` importing ``public[name]`` (a module path) on first use."""

    def __getattr__(name):
        if name in public:
            value = getattr(importlib.import_module(public[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
