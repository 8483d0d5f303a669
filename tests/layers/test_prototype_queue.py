import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.layers import PrototypeQueue

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reference_prototypes(batches, num_classes, feature_dim, size):
    """Independent list-based model of the reference FeatureQueue (bal_queue=True; a list
    ``size``: its classwise_max_size banks)."""
    sizes = size if isinstance(size, list) else [size] * num_classes
    queues = [[] for _ in range(num_classes)]
    prototypes = np.zeros((num_classes, feature_dim))
    history = []
    for features, labels in batches:
        for k in range(num_classes):
            selected = [f for f, y in zip(features, labels) if y == k]
            if selected:
                queues[k] = (queues[k] + selected)[-sizes[k]:]
                prototypes[k] = np.mean(queues[k], axis=0)
        history.append(prototypes.copy())
    return history


def test_hand_computed_fifo_means():
    queue = PrototypeQueue(num_classes=2, feature_dim=2, size=2)
    np.testing.assert_array_equal(queue.prototypes, np.zeros((2, 2)))

    queue.enqueue([[1.0, 0.0], [3.0, 0.0]], [0, 0])
    np.testing.assert_allclose(queue.prototypes, [[2.0, 0.0], [0.0, 0.0]])

    queue.enqueue([[5.0, 0.0]], [0])  # 1 drops out: queue (3, 5)
    np.testing.assert_allclose(queue.prototypes, [[4.0, 0.0], [0.0, 0.0]])

    queue.enqueue([[0.0, 2.0]], [1])  # class 0 untouched
    np.testing.assert_allclose(queue.prototypes, [[4.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(queue.counts, [2, 1])


def test_batch_with_more_samples_of_a_class_than_the_queue_keeps_the_last_ones():
    queue = PrototypeQueue(num_classes=2, feature_dim=1, size=2)
    queue.enqueue([[1.0], [2.0], [3.0], [4.0]], [0, 0, 0, 0])
    np.testing.assert_allclose(queue.prototypes, [[3.5], [0.0]])
    np.testing.assert_allclose(queue.queue_features.numpy()[0], [[3.0], [4.0]])
    np.testing.assert_array_equal(queue.counts, [2, 0])


def test_interleaved_classes_keep_batch_order_within_each_class():
    queue = PrototypeQueue(num_classes=2, feature_dim=1, size=2)
    queue.enqueue([[1.0], [2.0], [3.0], [4.0], [5.0]], [0, 1, 0, 1, 0])
    np.testing.assert_allclose(queue.prototypes, [[4.0], [3.0]])  # (3, 5) and (2, 4)
    queue.enqueue([[7.0]], [1])  # class 1: (4, 7)
    np.testing.assert_allclose(queue.prototypes, [[4.0], [5.5]])


def test_out_of_range_labels_and_empty_batches_are_ignored():
    queue = PrototypeQueue(num_classes=2, feature_dim=1, size=3)
    queue.enqueue([[1.0], [100.0], [3.0], [-50.0]], [0, -1, 0, 2])
    np.testing.assert_allclose(queue.prototypes, [[2.0], [0.0]])
    queue.enqueue(np.zeros((0, 1), np.float32), np.zeros((0,), np.int64))
    np.testing.assert_allclose(queue.prototypes, [[2.0], [0.0]])
    np.testing.assert_array_equal(queue.counts, [2, 0])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_random_batches_match_reference_model_inside_tf_function(jit_compile):
    num_classes, feature_dim, size = 4, 3, 5
    rng = np.random.default_rng(7)
    batches = []
    for batch_size in [1, 9, 3, 16, 2, 7]:  # 16 > size forces overflow within one batch
        labels = rng.integers(0, num_classes, batch_size)
        labels[0] = 3 if batch_size == 16 else labels[0]
        batches.append((rng.normal(size=(batch_size, feature_dim)).astype(np.float32), labels))
    expected = reference_prototypes(batches, num_classes, feature_dim, size)

    queue = PrototypeQueue(num_classes, feature_dim, size)
    enqueue = tf.function(queue.enqueue, jit_compile=jit_compile, reduce_retracing=True)
    for (features, labels), want in zip(batches, expected):
        got = enqueue(tf.constant(features), tf.constant(labels))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(queue.prototypes, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_per_class_sizes_match_reference_banks(jit_compile):
    # USADTM's banks: class k keeps its last sizes[k] features (5 x N_k in the reference).
    num_classes, feature_dim, sizes = 3, 2, [6, 3, 1]
    rng = np.random.default_rng(3)
    batches = [(rng.normal(size=(n, feature_dim)).astype(np.float32), rng.integers(0, num_classes, n))
               for n in (5, 8, 2, 11, 4)]
    expected = reference_prototypes(batches, num_classes, feature_dim, sizes)
    queue = PrototypeQueue(num_classes, feature_dim, sizes)
    assert queue.queue_features.shape == (3, 6, 2) and queue.get_config()["size"] == sizes
    enqueue = tf.function(queue.enqueue, jit_compile=jit_compile, reduce_retracing=True)
    pushed = np.zeros(num_classes, int)
    for (features, labels), want in zip(batches, expected):
        np.testing.assert_allclose(enqueue(tf.constant(features), tf.constant(labels)), want, rtol=1e-6, atol=1e-6)
        pushed += np.bincount(labels, minlength=num_classes)
        np.testing.assert_array_equal(queue.counts, np.minimum(pushed, sizes))
    # hand check of the 1-long bank: its prototype is the last class-2 feature pushed
    features, labels = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    np.testing.assert_allclose(queue.prototypes[2], features[labels == 2][-1], rtol=1e-6)
    with pytest.raises(ValueError, match="one per class"):
        PrototypeQueue(3, 2, [4, 4])


def test_float64_policy_keeps_float64_state_exactly():
    queue = PrototypeQueue(2, 2, 3, dtype="float64")
    assert queue.queue_features.dtype == "float64"
    features = np.array([[0.1, 1e-12], [0.2, 3e-12], [0.7, 5e-12]])
    queue.enqueue(features, [1, 1, 1])
    assert queue.prototypes.dtype == tf.float64
    np.testing.assert_allclose(queue.prototypes[1], features.mean(axis=0), rtol=1e-15, atol=0)


def test_mixed_precision_keeps_float32_state():
    queue = PrototypeQueue(2, 2, 3, dtype="mixed_float16")
    assert queue.variable_dtype == "float32"
    prototypes = queue.enqueue(tf.constant([[1.0, 2.0]], tf.float16), [0])
    assert prototypes.dtype == tf.float32 and queue.prototypes.dtype == tf.float32
    np.testing.assert_allclose(prototypes[0], [1.0, 2.0])


def test_state_is_non_trainable_and_restored_from_a_checkpoint(tmp_path):
    queue = PrototypeQueue(3, 2, 2, name="queue")
    assert queue.trainable_weights == [] and len(queue.non_trainable_weights) == 3
    queue.enqueue([[1.0, 1.0], [2.0, 0.0], [4.0, 4.0]], [0, 2, 0])
    path = tf.train.Checkpoint(queue=queue).write(str(tmp_path / "ckpt"))

    restored = PrototypeQueue.from_config(queue.get_config())
    tf.train.Checkpoint(queue=restored).read(path).assert_consumed()
    np.testing.assert_array_equal(restored.prototypes, queue.prototypes)
    np.testing.assert_array_equal(restored.counts, [2, 0, 1])
    # The restored FIFO continues where the saved one stopped: (1,1),(4,4) -> (4,4),(0,0).
    restored.enqueue([[0.0, 0.0]], [0])
    np.testing.assert_allclose(restored.prototypes[0], [2.0, 2.0])


def test_config_round_trip_and_invalid_arguments():
    config = PrototypeQueue(10, 128, 256).get_config()
    assert (config["num_classes"], config["feature_dim"], config["size"]) == (10, 128, 256)
    with pytest.raises(ValueError, match="size"):
        PrototypeQueue(10, 128, 0)
    with pytest.raises(ValueError, match="num_classes"):
        PrototypeQueue(2.5, 128, 4)


def test_mirrored_strategy_replicas_share_one_queue():
    # Needs two logical CPUs, which must be configured before TF initialises: run apart.
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from daso_tf.layers import PrototypeQueue
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            queue = PrototypeQueue(3, 4, 2)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8, 4)).astype(np.float32)
        y = rng.integers(0, 3, 8)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

        @tf.function
        def step(xb, yb):
            def replica_fn(xr, yr):
                context = tf.distribute.get_replica_context()
                queue.enqueue(context.all_gather(xr, 0), context.all_gather(yr, 0))
            strategy.run(replica_fn, (xb, yb))

        for xb, yb in strategy.experimental_distribute_dataset(data):
            step(xb, yb)
        single = PrototypeQueue(3, 4, 2)
        single.enqueue(x, y)
        for replica_value in queue.prototype_vectors.value.values:
            np.testing.assert_allclose(replica_value.numpy(), single.prototypes.numpy(), atol=1e-6)
        print("OK")
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
