import numpy as np
import pytest
import tensorflow as tf

from daso_tf.pseudo_labels import (
    blend_pseudo_labels,
    cosine_similarity,
    distribution_weights,
    semantic_probs,
)


def test_cosine_similarity_hand_computed_with_zero_vectors():
    features = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    prototypes = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(
        cosine_similarity(features, prototypes),
        [[1.0, 0.0, 0.0], [s, 0.0, s], [0.0, 0.0, 0.0]],
        rtol=1e-15, atol=1e-15,
    )


def test_cosine_similarity_clamps_each_norm_like_torch():
    # torch >= 1.12: x / max(||x||, eps) . y / max(||y||, eps); tiny vectors are not
    # renormalised to unit length.
    features = np.array([[1e-9, 0.0]])
    prototypes = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(features, prototypes), [[0.1]], rtol=1e-12)


def test_semantic_probs_hand_computed_and_zero_prototype_neutral():
    features = np.array([[1.0, 0.0]])
    prototypes = np.array([[3.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # cos = 1, 0, 0
    probs = semantic_probs(features, prototypes, temperature=0.5)
    e2 = np.exp(2.0)
    np.testing.assert_allclose(probs, [[e2 / (e2 + 2), 1 / (e2 + 2), 1 / (e2 + 2)]], rtol=1e-12)


def test_semantic_probs_is_a_distribution_and_sharpens_with_temperature():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 5)).astype(np.float32)
    prototypes = rng.normal(size=(4, 5)).astype(np.float32)
    warm = semantic_probs(features, prototypes, 1.0).numpy()
    cold = semantic_probs(features, prototypes, 0.05).numpy()
    np.testing.assert_allclose(warm.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(warm.argmax(axis=1), cold.argmax(axis=1))
    assert np.all(cold.max(axis=1) > warm.max(axis=1))
    # Scale-invariant in features and prototypes (cosine).
    np.testing.assert_allclose(semantic_probs(3 * features, 0.5 * prototypes, 1.0), warm, rtol=1e-5)


@pytest.mark.parametrize(
    "histogram, temperature, expected",
    [
        ([4, 1, 0], 1.0, [1.0, 0.25, 0.0]),
        ([4, 1, 0], 0.5, [1.0, 1 / 16, 0.0]),
        ([8, 1], 1.5, [1.0, 0.25]),  # (1/8)^(2/3) = 1/4
        ([0.8, 0.1, 0.1], 1.0, [1.0, 0.125, 0.125]),  # already normalised
    ],
)
def test_distribution_weights_hand_computed(histogram, temperature, expected):
    np.testing.assert_allclose(distribution_weights(histogram, temperature), expected, rtol=1e-6)


def test_distribution_weights_scale_invariant_and_empty_histogram_uniform():
    counts = np.array([163, 97, 83, 13, 0])
    np.testing.assert_allclose(
        distribution_weights(counts, 0.3), distribution_weights(counts / counts.sum(), 0.3), rtol=1e-6
    )
    weights = distribution_weights(np.zeros(5, np.int64), 1.5).numpy()
    assert np.all(np.isfinite(weights))
    np.testing.assert_array_equal(weights, np.ones(5))


def test_distribution_weights_dtypes():
    assert distribution_weights(np.array([1, 2]), 1.5).dtype == tf.float32
    assert distribution_weights(np.array([1.0, 2.0]), 1.5).dtype == tf.float64
    assert distribution_weights([1, 2], 1.5, dtype="float64").dtype == tf.float64
    assert distribution_weights(tf.constant([1.0, 2.0], tf.float16), 1.5).dtype == tf.float32
    # A Python float temperature must not be rounded through float32 in float64.
    weights = distribution_weights(np.array([2.0, 1.0]), 0.3)
    np.testing.assert_allclose(weights, [1.0, 0.5 ** (1 / 0.3)], rtol=1e-15)


def test_blend_looks_up_the_weight_at_the_linear_argmax():
    linear = np.array([[0.6, 0.4], [0.3, 0.7]])
    semantic = np.array([[0.0, 1.0], [1.0, 0.0]])
    weights = np.array([0.5, 1.0])
    # Row 0: argmax p = 0 -> v = 0.5 (semantic argmax 1 would give v = 1).
    # Row 1: argmax p = 1 -> v = 1, p' = q.
    np.testing.assert_allclose(
        blend_pseudo_labels(linear, semantic, weights), [[0.3, 0.7], [1.0, 0.0]], rtol=1e-15
    )


def test_blend_uses_the_semantic_probs_it_is_given():
    # Pitfall 2 (stale q): the result must follow the current batch's q, row by row.
    rng = np.random.default_rng(1)
    linear = tf.nn.softmax(rng.normal(size=(5, 3))).numpy()
    current_q = tf.nn.softmax(rng.normal(size=(5, 3))).numpy()
    previous_q = tf.nn.softmax(rng.normal(size=(5, 3))).numpy()
    weights = np.array([0.2, 0.7, 1.0])
    w = weights[linear.argmax(axis=1)][:, None]
    blended = blend_pseudo_labels(linear, current_q, weights).numpy()
    np.testing.assert_allclose(blended, (1 - w) * linear + w * current_q, rtol=1e-12)
    assert not np.allclose(blended, blend_pseudo_labels(linear, previous_q, weights))
    np.testing.assert_allclose(blended.sum(axis=1), 1.0, rtol=1e-12)


def test_empty_histogram_blend_has_no_nan():
    linear = np.array([[0.9, 0.1]], np.float32)
    semantic = np.array([[0.2, 0.8]], np.float32)
    blended = blend_pseudo_labels(linear, semantic, distribution_weights([0, 0], 0.3))
    np.testing.assert_allclose(blended, semantic)  # uniform m -> v = 1 everywhere


def test_no_gradient_flows_through_pseudo_labels():
    features = tf.Variable([[1.0, 2.0]])
    prototypes = tf.Variable([[1.0, 0.0], [0.0, 1.0]])
    logits = tf.Variable([[0.3, 0.1]])
    with tf.GradientTape(persistent=True) as tape:
        q = semantic_probs(features, prototypes, 0.1)
        blended = blend_pseudo_labels(tf.nn.softmax(logits), q, tf.constant([1.0, 0.5]))
        total = tf.reduce_sum(blended * tf.constant([[1.0, 2.0]]))
    for variable in (features, prototypes, logits):
        assert tape.gradient(total, variable) is None


@pytest.mark.parametrize("jit_compile", [False, True])
def test_graph_and_xla_match_eager(jit_compile):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(4, 6)).astype(np.float32)
    prototypes = rng.normal(size=(3, 6)).astype(np.float32)
    prototypes[1] = 0.0
    linear = tf.nn.softmax(rng.normal(size=(4, 3)).astype(np.float32))
    counts = np.array([5, 0, 2], np.int64)

    def pipeline(features, prototypes, linear, counts):
        q = semantic_probs(features, prototypes, 0.05)
        return blend_pseudo_labels(linear, q, distribution_weights(counts, 0.3))

    compiled = tf.function(pipeline, jit_compile=jit_compile)
    np.testing.assert_allclose(
        compiled(features, prototypes, linear, counts),
        pipeline(features, prototypes, linear, counts),
        rtol=1e-5, atol=1e-6,
    )


def test_float64_in_float64_out_and_half_precision_in_float32():
    features = np.array([[1.0, 2.0]])
    prototypes = np.array([[1.0, 1.0], [2.0, -1.0]])
    assert semantic_probs(features, prototypes, 0.05).dtype == tf.float64
    half = semantic_probs(tf.constant(features, tf.float16), tf.constant(prototypes, tf.float32), 0.05)
    assert half.dtype == tf.float32
    half_probs = tf.constant([[0.5, 0.5]], tf.float16)
    blended = blend_pseudo_labels(half_probs, tf.constant([[1.0, 0.0]]), [1.0, 1.0])
    assert blended.dtype == tf.float32
