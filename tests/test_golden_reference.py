"""Queue, histogram and loss-step golden values from the reference PyTorch code.

Every ``*_queue_*``, ``*_histogram_*`` and ``*_step_*`` file in the golden directory is
replayed through the public API (new files are picked up automatically). Tolerances
are those the golden files were recorded with: rtol 1e-4 / atol 1e-5 on prototypes and losses in float32,
exact on labels, masks and counts; the float64 replay is held much tighter.
"""

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.layers import PrototypeQueue, PseudoLabelHistogram
from daso_tf.losses import semantic_alignment_loss, supervised_loss, unlabeled_loss
from daso_tf.pseudo_labels import blend_pseudo_labels, distribution_weights, semantic_probs

# README tolerance (float32) and a float64 one. The reference's step files keep the
# histogram in float32 (lib/utils/dist_logger.py), so blended confidences carry ~1e-7
# of float32 rounding even in a float64 replay.
TOLERANCES = {
    "float32": dict(rtol=1e-4, atol=1e-5),
    "float64": dict(rtol=1e-10, atol=1e-12),
}
CONFIDENCE_TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-6, atol=1e-7)}


def golden_files(golden_dir, kind):
    paths = sorted(golden_dir.glob(f"*_{kind}_*.npz"))
    assert paths, f"no *_{kind}_*.npz files in {golden_dir}"
    return paths


def split_batches(data, *arrays):
    boundaries = np.cumsum(data["batch_sizes"])[:-1]
    return zip(*(np.split(data[name], boundaries) for name in arrays))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_queue_files(golden_dir, dtype):
    for path in golden_files(golden_dir, "queue"):
        data = np.load(path)
        queue = PrototypeQueue(data["num_classes"], data["feature_dim"], data["size"], dtype=dtype)
        batches = list(split_batches(data, "features", "labels"))
        assert len(batches) == len(data["prototypes_after_each_batch"])
        for step, ((features, labels), expected) in enumerate(
            zip(batches, data["prototypes_after_each_batch"])
        ):
            queue.enqueue(features, labels)
            np.testing.assert_allclose(
                queue.prototypes, expected, **TOLERANCES[dtype], err_msg=f"{path.name} batch {step}"
            )


def test_histogram_files(golden_dir):
    for path in golden_files(golden_dir, "histogram"):
        data = np.load(path)
        histogram = PseudoLabelHistogram(data["num_classes"], data["period"])
        batches = list(split_batches(data, "pseudo_labels"))
        for step, ((labels,), expected) in enumerate(zip(batches, data["counts_after_each_step"])):
            histogram.update(labels)
            np.testing.assert_array_equal(histogram.counts, expected, err_msg=f"{path.name} step {step}")


def replay_step(data, dtype):
    """One FixMatch + DASO loss computation composed from the public functions."""
    def constant(name):
        return tf.constant(data[name], dtype)

    queue = PrototypeQueue(data["num_classes"], data["feature_dim"], data["queue_size"], dtype=dtype)
    queue.enqueue(data["queue_history_features"], data["queue_history_labels"])
    queue.enqueue(data["ema_labeled_features"], data["labels"])
    prototypes = queue.prototypes

    def linear_head(features):
        return tf.matmul(features, constant("classifier_kernel")) + constant("classifier_bias")

    prior = data["labeled_prior"] if bool(data["logit_adjust"]) else None
    labeled_logits = linear_head(constant("labeled_features"))
    loss_x = supervised_loss(labeled_logits, data["labels"], class_prior=prior)
    linear_probs = tf.nn.softmax(linear_head(constant("weak_features")))
    proto_temperature = float(data["proto_temperature"])
    if bool(data["warmup_done"]):
        q = semantic_probs(constant("weak_features"), prototypes, proto_temperature)
        weights = distribution_weights(constant("histogram_counts"), float(data["dist_temperature"]))
        probs = blend_pseudo_labels(linear_probs, q, weights)
        semantic_labels = tf.argmax(q, axis=-1).numpy()
        strong_features = constant("strong_features")
        loss_align = semantic_alignment_loss(q, strong_features, prototypes, proto_temperature)
    else:
        probs = linear_probs
        semantic_labels = np.full(len(data["weak_features"]), -1)
        loss_align = tf.constant(0.0, dtype)
    strong_logits = linear_head(constant("strong_features"))
    loss_u, mask = unlabeled_loss(strong_logits, probs, float(data["threshold"]))
    return dict(
        prototypes=prototypes.numpy(),
        linear_pseudo_labels=tf.argmax(linear_probs, axis=-1).numpy(),
        semantic_pseudo_labels=semantic_labels,
        pseudo_labels=tf.argmax(probs, axis=-1).numpy(),
        confidence=tf.reduce_max(probs, axis=-1).numpy(),
        mask=mask.numpy().astype(bool),
        loss_x=loss_x.numpy(),
        loss_u=loss_u.numpy(),
        loss_align=loss_align.numpy(),
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_files(golden_dir, dtype):
    after_warmup_seen = False
    for path in golden_files(golden_dir, "step"):
        data = np.load(path)
        got = replay_step(data, dtype)
        for name in ("linear_pseudo_labels", "semantic_pseudo_labels", "pseudo_labels", "mask"):
            np.testing.assert_array_equal(got[name], data[name], err_msg=f"{path.name} {name}")
        for name in ("prototypes", "loss_x", "loss_u", "loss_align"):
            np.testing.assert_allclose(
                got[name], data[name], **TOLERANCES[dtype], err_msg=f"{path.name} {name}"
            )
        np.testing.assert_allclose(
            got["confidence"], data["confidence"], **CONFIDENCE_TOLERANCE[dtype],
            err_msg=f"{path.name} confidence",
        )
        after_warmup_seen |= bool(data["warmup_done"])
    assert after_warmup_seen, "no post-warm-up step file: blending and L_align are untested"
