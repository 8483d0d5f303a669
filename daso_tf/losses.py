"""DASO / FixMatch losses (docs/algorithm.md section 1).

Pure functions. Each returns the mean over the batch it is given (``supervised_loss``:
over B; ``unlabeled_loss`` / ``masked_cross_entropy``: sum over the batch divided by its
size B_u, not by the mask count; ``semantic_alignment_loss``: over B_u). Under a distribution strategy each
replica gets its local batch, so the caller scales the result for the global batch
(divide by ``num_replicas_in_sync``) before summing gradients across replicas.

Half-precision inputs (mixed precision) are computed in float32; float32 and float64
inputs keep their dtype. Targets (labels, pseudo-labels, prototypes) never receive
gradients.
"""

import tensorflow as tf

from daso_tf.pseudo_labels import as_float, cosine_similarity


def supervised_loss(logits, labels, class_prior=None, tau=1.0):
    """Mean cross-entropy of the labeled batch, optionally with train-time logit adjustment.

    Args:
        logits: `[B, K]` labeled logits.
        labels: `[B]` integer labels.
        class_prior: optional `[K]` labeled class prior (or counts; they are
            normalised). When given, the loss uses ``logits + tau * log(prior)``.
        tau: logit-adjustment strength.
    """
    logits = _to_loss_float(logits)
    if class_prior is not None:
        prior = as_float(class_prior, logits.dtype)
        prior = prior / tf.reduce_sum(prior)
        logits = logits + as_float(tau, logits.dtype) * tf.math.log(prior)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(per_sample)


def unlabeled_loss(strong_logits, pseudo_label_probs, threshold):
    """Masked hard-label consistency loss on the strong view.

    Args:
        strong_logits: `[B_u, K]` logits of the strongly augmented view.
        pseudo_label_probs: `[B_u, K]` final (blended) pseudo-label distribution p';
            its argmax is the target and its max the confidence.
        threshold: confidence threshold (0.95).

    Returns:
        ``(loss, mask)``: ``loss = sum_i mask_i * CE(strong_logits_i, argmax p'_i) / B_u``
        (exactly 0 when nothing passes) and ``mask`` `[B_u]`, 1.0 where
        ``max p' >= threshold`` else 0.0, in the loss dtype.
    """
    strong_logits = _to_loss_float(strong_logits)
    probs = tf.stop_gradient(tf.convert_to_tensor(pseudo_label_probs))
    probs = tf.cast(probs, _at_least_float32(probs.dtype))
    confidence = tf.reduce_max(probs, axis=-1)
    targets = tf.argmax(probs, axis=-1, output_type=tf.int32)
    passed = confidence >= as_float(threshold, probs.dtype)
    loss = masked_cross_entropy(strong_logits, targets, passed)
    return loss, tf.cast(passed, loss.dtype)


def masked_cross_entropy(logits, targets, mask):
    """The masked mean of hard-label cross-entropies: ``sum_i mask_i * CE(logits_i, targets_i) / B``.

    The denominator is the whole batch B, not the number of kept samples; exactly 0 when
    nothing is kept. ``mask`` is boolean `[B]`; ``targets`` integer `[B]` (no gradient).
    """
    logits = _to_loss_float(logits)
    targets = tf.stop_gradient(tf.cast(targets, tf.int32))
    per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    # where (not multiply): a masked-out sample with an infinite CE must not give NaN.
    masked = tf.where(tf.cast(mask, tf.bool), per_sample, tf.zeros_like(per_sample))
    batch_size = tf.cast(tf.shape(per_sample)[0], per_sample.dtype)
    return tf.reduce_sum(masked) / tf.maximum(batch_size, 1)


def semantic_alignment_loss(semantic_targets, strong_features, prototypes, temperature):
    """Semantic alignment loss L_align: soft cross-entropy of the strong view to q.

    ``mean_i -sum_k q_ik * log softmax(cos(strong_features_i, prototypes) / T)_k``.
    No confidence mask; gradients flow only into ``strong_features``.

    Args:
        semantic_targets: `[B_u, K]` semantic pseudo-labels q of the weak view.
        strong_features: `[B_u, D]` online strong-view features.
        prototypes: `[K, D]` class prototypes.
        temperature: T_proto.
    """
    strong_features = tf.convert_to_tensor(strong_features)
    strong_features = tf.cast(strong_features, _at_least_float32(strong_features.dtype))
    similarity = cosine_similarity(strong_features, tf.stop_gradient(prototypes))
    log_probs = tf.nn.log_softmax(similarity / as_float(temperature, similarity.dtype), axis=-1)
    targets = tf.stop_gradient(as_float(semantic_targets, log_probs.dtype))
    return tf.reduce_mean(-tf.reduce_sum(targets * log_probs, axis=-1))


def _at_least_float32(dtype):
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _to_loss_float(logits):
    logits = tf.convert_to_tensor(logits)
    return tf.cast(logits, _at_least_float32(logits.dtype))
