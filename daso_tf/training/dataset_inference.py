"""Dataset-wide inference: a network's softmax over a whole image set, in order.

The passes learners make over an entire set between training steps (CReST's selection
over the unlabeled set with the EMA network, DARP_ESTIM's confusion matrix and unlabeled
mass) use this, with the evaluation transform (resize only) and inference-mode BatchNorm.
"""

import weakref

import numpy as np
import tensorflow as tf

_SOFTMAX_FUNCTIONS = weakref.WeakKeyDictionary()  # network -> its traced softmax function


def _softmax_function(network):
    if network not in _SOFTMAX_FUNCTIONS:
        _SOFTMAX_FUNCTIONS[network] = tf.function(
            lambda batch: tf.nn.softmax(tf.cast(network(batch, training=False), tf.float32)), reduce_retracing=True)
    return _SOFTMAX_FUNCTIONS[network]


def predict_probabilities(network, images, *, batch_size=256, output_size=32):
    """softmax(network(x)) for every image of ``images`` (uint8 [N, H, W, 3]), in order, as
    float64 [N, K]; ``network`` is called in inference mode (e.g. a learner, which runs its
    EMA network, or ``learner.ema_network``)."""
    from daso_tf.data import eval_stream

    images = np.asarray(images)
    labels = np.zeros(len(images), np.int32)  # eval_stream's format; unused
    probabilities = _softmax_function(network)
    outputs = [np.asarray(probabilities(batch), dtype="float64")
               for batch, _ in eval_stream(images, labels, batch_size=batch_size, output_size=output_size)]
    if not outputs:
        raise ValueError("predict_probabilities needs at least one image.")
    return np.concatenate(outputs)
