"""Class-wise FIFO feature queue and its prototypes (DASO's "balanced prototypes").

Reference semantics (ytaek-oh/daso ``lib/models/feature_queue.py``; DASO's
``bal_queue=True``, docs/algorithm.md section 1, and USADTM's per-class sizes):
- every class keeps the most recent ``size`` features pushed for it (the same length
  for every class, DASO), or ``size[k]`` for class k (USADTM's banks of 5 N_k), in push
  order;
- after a push, the prototype of each class present in the batch is the plain mean of
  its queue; classes absent from the batch keep their prototype; a class never seen
  has a zero prototype (cosine similarity 0 to everything).

The state lives in non-trainable variables (checkpointed with the model) created with
``aggregation="only_first_replica"``: under ``tf.distribute.MirroredStrategy`` the
caller all-gathers the global batch first and every replica then computes and assigns
the same new value (docs/algorithm.md section 6). The update is one vectorised, functional
computation (gathers + ``assign``), so it runs inside ``tf.function`` and XLA.
"""

import keras
import tensorflow as tf

from daso_tf._validation import positive_int


class PrototypeQueue(keras.layers.Layer):
    """Per-class FIFO queues of features and their mean prototypes.

    Args:
        num_classes: number of classes K.
        feature_dim: feature width D.
        size: queue length L per class (the reference's ``QUEUE.MAX_SIZE``, 256), or a
            sequence of K lengths, one per class.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``). The
            state is stored in the layer's variable dtype: float32 under the float32
            and mixed-precision policies, float64 under a float64 policy.

    State (non-trainable variables):
        ``queue_features`` [K, L, D] (L: the largest size): class k's queue in slots
            ``0..count_k-1``, oldest first; unused slots are zero.
        ``queue_counts`` [K] int64: number of features held, ``min(pushed, size_k)``.
        ``prototype_vectors`` [K, D]: the current prototypes.

    Example:
        >>> queue = PrototypeQueue(num_classes=10, feature_dim=128, size=256)
        >>> queue.enqueue(ema_labeled_features, labels)
        >>> queue.prototypes  # [10, 128]
    """

    def __init__(self, num_classes, feature_dim, size, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = positive_int(num_classes, "num_classes", "PrototypeQueue")
        self.feature_dim = positive_int(feature_dim, "feature_dim", "PrototypeQueue")
        if isinstance(size, (list, tuple)):
            if len(size) != self.num_classes:
                raise ValueError(f"PrototypeQueue: `size` must be one length or {self.num_classes} "
                                 f"(one per class); got {len(size)}.")
            self.size = [positive_int(s, "size", "PrototypeQueue") for s in size]
        else:
            self.size = positive_int(size, "size", "PrototypeQueue")
        sizes = self.size if isinstance(self.size, list) else [self.size] * self.num_classes
        self.class_sizes = tuple(sizes)
        self.max_size = max(sizes)
        self.build()

    def build(self, input_shape=None):
        # autocast=False: the state must stay in the variable dtype (float32) even when
        # it is read inside a mixed-precision layer's call.
        state = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        self.queue_features = self.add_weight(
            shape=(self.num_classes, self.max_size, self.feature_dim),
            initializer="zeros", dtype=self.variable_dtype, name="queue_features", **state,
        )
        self.queue_counts = self.add_weight(
            shape=(self.num_classes,), initializer="zeros", dtype="int64",
            name="queue_counts", **state,
        )
        self.prototype_vectors = self.add_weight(
            shape=(self.num_classes, self.feature_dim),
            initializer="zeros", dtype=self.variable_dtype, name="prototype_vectors", **state,
        )

    @property
    def prototypes(self):
        """`[num_classes, feature_dim]` tensor of per-class queue means."""
        return tf.convert_to_tensor(self.prototype_vectors.value)

    @property
    def counts(self):
        """`[num_classes]` int64 tensor: features currently held per class."""
        return tf.convert_to_tensor(self.queue_counts.value)

    def enqueue(self, features, labels):
        """Pushes a batch and refreshes the prototypes of the classes it contains.

        Args:
            features: `[B, feature_dim]` float features (any float dtype; cast to the
                variable dtype). Under a distribution strategy pass the all-gathered
                global batch, in global batch order.
            labels: `[B]` integer labels. Samples of one class enter its queue in batch
                order; a class with more than ``size_k`` samples in the batch keeps its
                last ``size_k``. Labels outside ``[0, num_classes)`` (e.g. -1 padding)
                are ignored.

        Returns:
            The new prototypes, `[num_classes, feature_dim]`.
        """
        num_classes, size = self.num_classes, self.max_size
        capacity = tf.constant(self.class_sizes, tf.int32)  # [K]
        dtype = self.variable_dtype
        features = tf.cast(tf.convert_to_tensor(features), dtype)
        labels = tf.cast(tf.reshape(tf.convert_to_tensor(labels), [-1]), tf.int32)
        features = tf.reshape(features, [-1, self.feature_dim])
        batch_size = tf.shape(labels)[0]

        valid = (labels >= 0) & (labels < num_classes)
        new_per_class = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=tf.int32), axis=0)  # [K]
        # Batch indices grouped by class, batch order kept inside a class (the sort key is
        # unique); ignored labels sort last.
        sort_key = tf.where(valid, labels, num_classes) * batch_size + tf.range(batch_size)
        order = tf.argsort(sort_key)
        class_start = tf.cumsum(new_per_class, exclusive=True)  # [K]

        old_counts = tf.cast(self.queue_counts.value, tf.int32)  # [K]
        total = old_counts + new_per_class
        new_counts = tf.minimum(total, capacity)
        # Slot j of class k's new queue holds element (total_k - new_counts_k + j) of the
        # sequence "old queue, then this batch's class-k samples".
        slots = tf.range(size)[tf.newaxis, :]  # [1, L]
        source = (total - new_counts)[:, tf.newaxis] + slots  # [K, L]
        filled = slots < new_counts[:, tf.newaxis]
        from_old = source < old_counts[:, tf.newaxis]

        old_values = tf.gather(
            self.queue_features.value, tf.clip_by_value(source, 0, size - 1), batch_dims=1
        )  # [K, L, D]
        rank_in_batch = source - old_counts[:, tf.newaxis]
        position = tf.clip_by_value(class_start[:, tf.newaxis] + rank_in_batch, 0, batch_size)
        # One zero row appended so an empty batch still has a valid gather target.
        padded_order = tf.concat([order, [batch_size]], axis=0)
        padded_features = tf.concat([features, tf.zeros([1, self.feature_dim], dtype)], axis=0)
        new_values = tf.gather(padded_features, tf.gather(padded_order, position))  # [K, L, D]

        zeros = tf.zeros_like(old_values)
        queue = tf.where(
            filled[..., tf.newaxis],
            tf.where(from_old[..., tf.newaxis], old_values, new_values),
            zeros,
        )
        means = tf.reduce_sum(queue, axis=1) / tf.cast(
            tf.maximum(new_counts, 1), dtype
        )[:, tf.newaxis]
        present = (new_per_class > 0)[:, tf.newaxis]
        prototypes = tf.where(present, means, self.prototype_vectors.value)

        self.queue_features.assign(queue)
        self.queue_counts.assign(tf.cast(new_counts, "int64"))
        self.prototype_vectors.assign(prototypes)
        return prototypes

    def call(self, features, labels):
        """Same as `enqueue` (lets the queue be used as a called layer)."""
        return self.enqueue(features, labels)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, feature_dim=self.feature_dim, size=self.size
        )
        return config
