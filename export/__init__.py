"""SavedModel export for TF Serving, as the checkout's top-level ``export`` package.

The implementation lives in the library (``daso_tf.serving``) so that an installed daso_tf can
export too; this package re-exports it for code that runs from a checkout. The request client
is ``python -m export.client`` (same as ``python -m daso_tf.serving.client``).
"""

from daso_tf.serving import (  # noqa: F401
    BYTES_SIGNATURE,
    SERVING_SIGNATURE,
    export_saved_model,
    next_version,
    write_models_config,
)

__all__ = ["BYTES_SIGNATURE", "SERVING_SIGNATURE", "export_saved_model", "next_version",
           "write_models_config"]
