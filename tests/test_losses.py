import keras
import numpy as np
import pytest
import tensorflow as tf

from daso_tf.losses import semantic_alignment_loss, supervised_loss, unlabeled_loss
from daso_tf.pseudo_labels import blend_pseudo_labels

LOG2 = np.log(2.0)


def test_supervised_loss_hand_computed():
    logits = np.array([[0.0, 0.0], [0.0, np.log(3.0)]])
    # Sample 0: log 2; sample 1, label 1: -log(3/4).
    np.testing.assert_allclose(supervised_loss(logits, [0, 1]), (LOG2 - np.log(0.75)) / 2, rtol=1e-12)


def test_supervised_loss_with_logit_adjustment():
    logits = np.zeros((1, 2))
    np.testing.assert_allclose(
        supervised_loss(logits, [0], class_prior=[0.8, 0.2]), -np.log(0.8), rtol=1e-12
    )
    # Counts are normalised; tau scales the log prior: softmax(2 log p) = p^2 / sum p^2.
    np.testing.assert_allclose(
        supervised_loss(logits, [0], class_prior=np.array([8, 2]), tau=2.0),
        -np.log(0.64 / 0.68), rtol=1e-12,
    )
    # A uniform prior changes nothing.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, 5)
    np.testing.assert_allclose(
        supervised_loss(logits, labels, class_prior=np.full(4, 0.25)),
        supervised_loss(logits, labels),
        rtol=1e-12,
    )


def test_supervised_loss_matches_keras_crossentropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    np.testing.assert_allclose(supervised_loss(logits, labels), expected, rtol=1e-6)


def test_unlabeled_loss_divides_by_batch_size_not_mask_count():
    strong_logits = np.zeros((4, 2))
    probs = np.array([[0.96, 0.04], [0.6, 0.4], [0.1, 0.9], [0.05, 0.95]])
    loss, mask = unlabeled_loss(strong_logits, probs, threshold=0.95)
    np.testing.assert_array_equal(mask, [1.0, 0.0, 0.0, 1.0])  # >= threshold passes
    np.testing.assert_allclose(loss, 2 * LOG2 / 4, rtol=1e-12)


def test_unlabeled_loss_uses_hard_argmax_targets():
    strong_logits = np.array([[np.log(3.0), 0.0]])
    loss, _ = unlabeled_loss(strong_logits, np.array([[0.7, 0.3]]), threshold=0.5)
    np.testing.assert_allclose(loss, -np.log(0.75), rtol=1e-12)  # not soft CE against (0.7, 0.3)


def test_unlabeled_loss_is_exactly_zero_without_nan_when_nothing_passes():
    strong_logits = tf.Variable([[0.0, -np.inf], [1.0, 2.0]], dtype=tf.float32)
    probs = np.array([[0.1, 0.9], [0.5, 0.5]], np.float32)  # sample 0: CE would be inf
    with tf.GradientTape() as tape:
        loss, mask = unlabeled_loss(strong_logits, probs, threshold=0.95)
    assert float(loss) == 0.0 and np.all(mask.numpy() == 0)
    gradient = tape.gradient(loss, strong_logits).numpy()
    assert np.all(np.isfinite(gradient)) and np.all(gradient == 0)


def test_unlabeled_loss_gradient_only_into_strong_logits():
    strong_logits = tf.Variable([[0.5, -0.5], [0.2, 0.1]])
    probs = tf.Variable([[0.99, 0.01], [0.2, 0.8]])
    with tf.GradientTape(persistent=True) as tape:
        loss, _ = unlabeled_loss(strong_logits, probs, threshold=0.95)
    assert tape.gradient(loss, probs) is None
    # d/dlogits of mean-over-B_u masked CE: (softmax - onehot) / B_u for passing rows.
    softmax = tf.nn.softmax(strong_logits).numpy()
    expected = np.array([(softmax[0] - [1.0, 0.0]) / 2, [0.0, 0.0]])
    np.testing.assert_allclose(tape.gradient(loss, strong_logits), expected, rtol=1e-6)


def test_mask_is_taken_on_the_blended_pseudo_label():
    # Pitfall 1: p is confident (0.99) but p' after blending with q is not.
    linear = np.array([[0.99, 0.01]])
    semantic = np.array([[0.0, 1.0]])
    blended = blend_pseudo_labels(linear, semantic, np.array([0.5, 1.0]))  # [0.495, 0.505]
    _, mask_blended = unlabeled_loss(np.zeros((1, 2)), blended, threshold=0.95)
    _, mask_linear = unlabeled_loss(np.zeros((1, 2)), linear, threshold=0.95)
    assert mask_blended.numpy().tolist() == [0.0] and mask_linear.numpy().tolist() == [1.0]


def test_semantic_alignment_loss_hand_computed():
    prototypes = np.array([[2.0, 0.0], [0.0, 5.0]])
    strong = np.array([[1.0, 0.0], [1.0, 1.0]])  # cos: (1, 0) and (s, s)
    targets = np.array([[1.0, 0.0], [0.25, 0.75]])
    temperature = 0.5
    row0 = -np.log(np.exp(2.0) / (np.exp(2.0) + 1.0))
    row1 = np.log(2.0)  # equal logits: log-softmax = -log 2 for both classes
    np.testing.assert_allclose(
        semantic_alignment_loss(targets, strong, prototypes, temperature), (row0 + row1) / 2, rtol=1e-12
    )


def test_semantic_alignment_loss_gradient_only_into_strong_features():
    strong = tf.Variable([[1.0, 0.5], [0.2, -1.0]])
    prototypes = tf.Variable([[1.0, 0.0], [0.0, 1.0]])
    targets = tf.Variable([[0.7, 0.3], [0.4, 0.6]])
    with tf.GradientTape(persistent=True) as tape:
        loss = semantic_alignment_loss(targets, strong, prototypes, 0.05)
    assert tape.gradient(loss, prototypes) is None
    assert tape.gradient(loss, targets) is None
    gradient = tape.gradient(loss, strong)
    assert gradient is not None and np.all(np.isfinite(gradient)) and np.any(gradient.numpy() != 0)


def test_semantic_alignment_with_zero_prototype_is_finite():
    loss = semantic_alignment_loss(np.full((1, 2), 0.5), np.array([[1.0, 1.0]]), np.zeros((2, 2)), 0.05)
    np.testing.assert_allclose(loss, LOG2, rtol=1e-12)


def test_dtypes_float64_kept_half_precision_computed_in_float32():
    logits64 = np.zeros((2, 3))
    assert supervised_loss(logits64, [0, 1]).dtype == tf.float64
    assert unlabeled_loss(logits64, np.full((2, 3), 1 / 3), 0.95)[0].dtype == tf.float64
    for half in (tf.float16, tf.bfloat16):
        logits = tf.constant([[20.0, 0.0, -20.0]], half)
        loss = supervised_loss(logits, [2])
        assert loss.dtype == tf.float32
        np.testing.assert_allclose(loss, 40.0, rtol=1e-3)
        loss_u, mask = unlabeled_loss(logits, tf.constant([[0.0, 0.0, 1.0]], half), 0.95)
        assert loss_u.dtype == tf.float32 and mask.dtype == tf.float32
        features = tf.constant([[1.0, 0.0]], half)
        targets = tf.constant([[1.0, 0.0]], half)
        align = semantic_alignment_loss(targets, features, np.eye(2, dtype=np.float32), 1.0)
        assert align.dtype == tf.float32


@pytest.mark.parametrize("jit_compile", [False, True])
def test_losses_in_graph_and_xla_match_eager(jit_compile):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 4)
    strong = rng.normal(size=(6, 3)).astype(np.float32) * 3
    probs = tf.nn.softmax(rng.normal(size=(6, 3)).astype(np.float32) * 3)
    features = rng.normal(size=(6, 5)).astype(np.float32)
    prototypes = rng.normal(size=(3, 5)).astype(np.float32)

    def all_losses(logits, labels, strong, probs, features, prototypes):
        loss_x = supervised_loss(logits, labels, class_prior=tf.constant([0.5, 0.3, 0.2]))
        loss_u, mask = unlabeled_loss(strong, probs, 0.6)
        loss_align = semantic_alignment_loss(probs, features, prototypes, 0.05)
        return loss_x, loss_u, mask, loss_align

    args = (logits, labels, strong, probs, features, prototypes)
    for got, want in zip(tf.function(all_losses, jit_compile=jit_compile)(*args), all_losses(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
