"""``python -m export.client``: the TF Serving request client (``daso_tf.serving.client``)."""

import sys

from daso_tf.serving.client import *  # noqa: F401,F403
from daso_tf.serving.client import main

if __name__ == "__main__":
    sys.exit(main())
