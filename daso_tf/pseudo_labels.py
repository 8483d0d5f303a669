"""DASO pseudo-label math: semantic pseudo-labels, distribution-aware blending.

Reference semantics: ytaek-oh/daso ``lib/models/daso_model.py`` (docs/algorithm.md
section 1, step 5). Pure functions of tensors (NumPy inputs accepted), no gradient through
any output (pseudo-labels are targets). Half-precision inputs are computed in float32;
float32/float64 inputs keep their dtype.
"""

import keras
import numpy as np
import tensorflow as tf

# torch.nn.CosineSimilarity's default eps.
COSINE_EPSILON = 1e-8


def cosine_similarity(features, prototypes, epsilon=COSINE_EPSILON):
    """Pairwise cosine similarity `[B, K]` between `[B, D]` features and `[K, D]` prototypes.

    As ``torch.nn.CosineSimilarity(dim=2)`` on ``features[:, None]`` and
    ``prototypes[None]``: each vector is divided by ``max(norm, epsilon)`` before the dot
    product, so a zero vector (e.g. a never-seen class's prototype) has similarity 0.
    """
    features, prototypes = _as_common_float(features, prototypes)
    epsilon = as_float(epsilon, features.dtype)
    features = features / tf.maximum(tf.norm(features, axis=-1, keepdims=True), epsilon)
    prototypes = prototypes / tf.maximum(tf.norm(prototypes, axis=-1, keepdims=True), epsilon)
    return tf.matmul(features, prototypes, transpose_b=True)


def semantic_probs(features, prototypes, temperature):
    """Semantic pseudo-label q = softmax(cos(features, prototypes) / temperature), `[B, K]`.

    Args:
        features: `[B, D]` (online weak-view) features.
        prototypes: `[K, D]` class prototypes (`PrototypeQueue.prototypes`).
        temperature: T_proto (0.05 in the paper).
    """
    similarity = cosine_similarity(tf.stop_gradient(features), tf.stop_gradient(prototypes))
    return tf.nn.softmax(similarity / as_float(temperature, similarity.dtype), axis=-1)


def distribution_weights(class_histogram, temperature, dtype=None):
    """Distribution-aware blending weights v_k = m_k^(1/T) / max_j m_j^(1/T), `[K]`.

    Args:
        class_histogram: `[K]` pseudo-label counts or an already normalised
            distribution (the result is scale-invariant).
        temperature: T_dist (1.5 or 0.3 in the paper).
        dtype: output dtype; defaults to the histogram's float dtype, float32 for
            integer histograms.

    A class with zero count gets weight 0. An all-zero histogram (no window closed
    yet) is treated as uniform, i.e. all weights 1, instead of the reference's NaN.
    """
    histogram = tf.convert_to_tensor(class_histogram)
    if dtype is None:
        dtype = histogram.dtype if histogram.dtype.is_floating else tf.float32
    dtype = _at_least_float32(tf.as_dtype(dtype))
    histogram = tf.cast(histogram, dtype)
    total = tf.reduce_sum(histogram)
    num_classes = tf.cast(tf.size(histogram), dtype)
    # Same operation order as the reference: normalise, sharpen, renormalise, divide by max.
    distribution = tf.where(total > 0, histogram / tf.where(total > 0, total, 1), 1 / num_classes)
    sharpened = tf.pow(distribution, 1 / as_float(temperature, dtype))
    sharpened = sharpened / tf.reduce_sum(sharpened)
    return tf.stop_gradient(sharpened / tf.reduce_max(sharpened))


def blend_pseudo_labels(linear_probs, semantic_probs, class_weights):
    """Blended pseudo-label p' = (1 - v_k') p + v_k' q, `[B, K]`.

    Args:
        linear_probs: `[B, K]` linear pseudo-label p = softmax(weak logits).
        semantic_probs: `[B, K]` semantic pseudo-label q of the SAME batch.
        class_weights: `[K]` weights v (`distribution_weights`), looked up per sample
            at k' = argmax p (the LINEAR pseudo-label).
    """
    linear_probs, semantic_probs = _as_common_float(linear_probs, semantic_probs)
    linear_probs = tf.stop_gradient(linear_probs)
    semantic_probs = tf.stop_gradient(semantic_probs)
    class_weights = tf.stop_gradient(as_float(class_weights, linear_probs.dtype))
    weight = tf.gather(class_weights, tf.argmax(linear_probs, axis=-1))[:, tf.newaxis]
    return (1 - weight) * linear_probs + weight * semantic_probs


def as_float(value, dtype):
    """`value` (Python/NumPy value, tensor or variable) as a tensor of float `dtype`.

    Python floats go through NumPy (float64), not `tf.cast` (which first makes a
    float32 tensor: 0.05 would become 0.05000000074505806 in a float64 computation).
    """
    if tf.is_tensor(value) or isinstance(value, (tf.Variable, keras.Variable)):
        return tf.cast(value, dtype)
    return tf.cast(np.asarray(value), dtype)


def _at_least_float32(dtype):
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _as_common_float(*tensors):
    """Casts tensors to one float dtype: float64 if any is float64, else float32."""
    tensors = [tf.convert_to_tensor(t) for t in tensors]
    dtype = tf.float64 if any(t.dtype == tf.float64 for t in tensors) else tf.float32
    return [tf.cast(t, dtype) for t in tensors]
