"""Devices and the distribution strategy, from ``RuntimeConfig``.

- ``default``: TensorFlow's default strategy (one device);
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs (or over the
  logical CPUs from ``runtime.virtual_cpu_devices``);
- ``multi_worker_mirrored``: ``tf.distribute.MultiWorkerMirroredStrategy`` configured by
  the ``TF_CONFIG`` environment variable (TensorFlow's engine: collectives, fault tolerance
  by restarting every worker from the last checkpoint).

Batch semantics are global: ``data.labeled_batch_size`` is the batch of one step summed
over all replicas. ``input_pipeline_for_replicas`` splits every global batch so that
replica r gets slice r; the learners all-gather in replica order, so prototypes,
histogram and (with synchronised BatchNorm) the weights match a one-device run.
"""

import json
import os

import keras
import tensorflow as tf

from daso_tf.config import ConfigError


def configure_devices(runtime):
    """Applies device settings that must precede every TensorFlow op.

    ``runtime.virtual_cpu_devices`` > 1 splits the (first) CPU into that many logical
    devices; ``runtime.deterministic`` turns on op determinism.
    """
    if runtime.virtual_cpu_devices > 1:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * runtime.virtual_cpu_devices)
        except RuntimeError as error:
            raise RuntimeError(
                "runtime.virtual_cpu_devices must be applied before TensorFlow initialises its "
                f"devices (call configure_devices first): {error}") from None
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()


def make_strategy(runtime):
    """The ``tf.distribute`` strategy named by ``runtime.distribution_strategy``."""
    name = runtime.distribution_strategy
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        if runtime.jit_compile is True and not gpus:
            raise ConfigError("runtime.jit_compile=true with a mirrored strategy fails on CPU devices "
                              "with TF 2.21; set runtime.jit_compile=false")
        # On CPUs NCCL is unavailable; reduce through the host.
        cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("runtime.distribution_strategy=multi_worker_mirrored needs the TF_CONFIG "
                              "environment variable (cluster and task of this worker)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError:
            raise ConfigError("TF_CONFIG is not valid JSON") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"runtime.distribution_strategy={name!r}: expected default, mirrored or multi_worker_mirrored")


def task_info():
    """(task_type, task_id) of this process from TF_CONFIG; ("chief", 0) on a single host."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    return task.get("type", "chief"), int(task.get("index", 0))


def is_chief(strategy):
    """Whether this process writes summaries, results and checkpoints.

    Multi-worker: the "chief" task, or worker 0 when the cluster has no chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type in (None, "worker") and task_id == 0 and not has_chief


def is_chief_task(runtime):
    """``is_chief`` from TF_CONFIG alone, before any strategy (or TensorFlow) exists."""
    if runtime.distribution_strategy != "multi_worker_mirrored":
        return True
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    task_type, task_id = task.get("type", "worker"), int(task.get("index", 0))
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def chief_decides(strategy, flag):
    """The chief's ``flag`` on every worker (multi-worker); ``flag`` itself otherwise.

    Decisions that lead to a collective (e.g. "save a best checkpoint") must be the same on
    every worker or the collective hangs; each worker may see different files (results,
    checkpoints are the chief's), so the chief decides and every worker adopts its answer.
    """
    if not in_multi_worker_mode(strategy):
        return bool(flag)
    # Every local replica of the chief contributes the flag, every other replica 0.
    contribution = tf.constant(1.0 if (flag and is_chief(strategy)) else 0.0)

    @tf.function
    def all_reduce(value):
        def replica_fn(value):
            # tf.identity: the device quirk 2 of wrap_train_logs_for_multi_worker.
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(value))
        return strategy.run(replica_fn, args=(value,))

    total = strategy.experimental_local_results(all_reduce(contribution))[0]
    return bool(float(total) > 0.5)


def synchronize_batch_norm(model):
    """Makes every BatchNormalization layer compute global-batch statistics.

    Under several replicas each replica would otherwise normalise with the statistics of
    its slice only, so training would no longer match a one-device run.
    """
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count


def _all_layers(layer, seen=None):
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    for child in getattr(layer, "_layers", []) or []:
        yield from _all_layers(child, seen)
    for value in vars(layer).values():
        if isinstance(value, keras.layers.Layer):
            yield from _all_layers(value, seen)


def input_pipeline_for_replicas(strategy, make_global_dataset):
    """Distributes a dataset of GLOBAL batches: replica r gets slice r of every component.

    ``make_global_dataset()`` returns a dataset whose every element is one global batch
    (nested tuple of tensors, leading dimension = batch). Each component's batch must be
    divisible by ``strategy.num_replicas_in_sync``. One replica: the dataset itself.
    """
    num_replicas = strategy.num_replicas_in_sync
    if num_replicas == 1:
        return make_global_dataset()

    def dataset_fn(input_context):
        local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        first_replica = input_context.input_pipeline_id * local_replicas
        dataset = make_global_dataset()

        def local_slices(*batch):
            def slices(tensor):
                per_replica = tf.shape(tensor)[0] // num_replicas
                parts = [tensor[(first_replica + r) * per_replica:(first_replica + r + 1) * per_replica]
                         for r in range(local_replicas)]
                return tf.stack(parts)
            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(slices, batch))

        # Elements go to the local replicas in order: local replica i gets element i.
        return dataset.flat_map(local_slices).prefetch(local_replicas)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def check_divisible(strategy, **batch_sizes):
    """Raises ConfigError when a global batch size does not split over the replicas."""
    num_replicas = strategy.num_replicas_in_sync
    for key, size in batch_sizes.items():
        if size % num_replicas:
            raise ConfigError(f"{key}={size} must be divisible by the {num_replicas} replicas in sync")


def in_multi_worker_mode(strategy):
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def wrap_train_logs_for_multi_worker(model, strategy):
    """Adapts ``model.train_step`` to two TF 2.21 / Keras 3.15 multi-worker quirks.

    1. Keras reduces train logs with ``strategy.reduce("MEAN", v, axis=0)`` under
       multi-worker collectives, which fails for scalar logs ("Invalid reduction dimension
       0 for input with 0 dimensions"): each replica's scalar becomes a [1] vector, and the
       axis-0 mean over all replicas is the scalar again.
    2. ``ReplicaContext.all_gather`` uses the gathered tensor's device as destination; the
       input tensors of a replica step carry no device under multi-worker in a tf.function
       ("destinations can not be empty"), so the batch is passed through ``tf.identity``
       inside the replica, which places it on the replica's device.
    """
    if not in_multi_worker_mode(strategy):
        return False
    train_step = model.train_step

    def train_step_with_vector_logs(data):
        logs = train_step(tf.nest.map_structure(tf.identity, data))
        return {key: tf.reshape(tf.cast(value, tf.float32), [1]) for key, value in logs.items()}

    model.train_step = train_step_with_vector_logs
    return True
