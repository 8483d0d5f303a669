"""Lazy package attributes (PEP 562), so that light imports do not pay for TensorFlow."""

import importlib


def lazy_getattr(package, public, namespace):
    """A module ``__getattr__`` importing ``public[name]`` (a module path) on first use.

    ``public[name]`` is the module defining ``name``, or the submodule ``name`` itself.
    """

    def __getattr__(name):
        if name in public:
            module = importlib.import_module(public[name])
            value = module if module.__name__ == f"{package}.{name}" else getattr(module, name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
