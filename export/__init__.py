"""Export trained networks for TF Serving (SavedModel) and build requests for it."""

from export.saved_model import (
    BYTES_SIGNATURE,
    SERVING_SIGNATURE,
    export_saved_model,
    next_version,
    write_models_config,
)

__all__ = [
    "BYTES_SIGNATURE",
    "SERVING_SIGNATURE",
    "export_saved_model",
    "next_version",
    "write_models_config",
]
