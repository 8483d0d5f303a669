"""TF Serving: SavedModel export of a trained classifier, and a REST/gRPC request client.

``export_saved_model`` (also ``model.export(...)`` and ``run.py --mode=export``) writes the
TF Serving layout; ``daso_tf.serving.client`` builds and sends predict requests
(``python -m daso_tf.serving.client``).
"""

from daso_tf.serving.saved_model import (
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
