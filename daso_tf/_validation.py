"""Small argument checks shared by the layers, the config and the export (no TensorFlow)."""

import re

# A TF Serving model name: a directory name under the export root.
SERVING_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def positive_int(value, name, owner):
    """``value`` as an int if it is a positive integer, else a ValueError naming it."""
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        as_int = None
    if as_int is None or as_int != value or as_int < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive integer, got {value!r}.")
    return as_int
