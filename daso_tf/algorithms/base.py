"""SemiSupervisedModel: what every learner shares (docs/algorithm.md sections 1 and 3).

- an online ``ClassifierNetwork`` (backbone + linear head, pixel normalisation inside) and
  its EMA copy, updated after every optimiser step for weights AND BatchNorm moving
  statistics with decay ``min(1 - 1/(t+1), ema_decay)``;
- ``evaluate`` / ``predict`` / ``__call__`` run the EMA network in inference mode;
- the step counter ``step`` (0-based index of the next training step);
- the train-step skeleton: one online forward pass over ``[x_l, u_w, u_s]`` (BatchNorm
  statistics span the whole concatenation), the algorithm's losses, the gradient step on
  the online network only, the EMA update, the algorithm's bookkeeping;
- multi-replica plumbing (``all_gather``, losses scaled for the global batch).

A learner subclasses this and fills in ``compute_losses`` (and optionally the hooks
``before_online_forward`` / ``after_optimizer_step`` / ``build_state``). Learners with a
different forward pass (MixUp, several views, a teacher network) override
``forward_and_compute_losses``; learners needing other unlabeled views declare
``unlabeled_views`` and ``select_unlabeled_views``; extra linear heads (ABC, rotation) are
passed to both networks through ``auxiliary_heads`` / ``evaluation_head``. All state is
held in Keras variables, so ``tf.train.Checkpoint(model=..., optimizer=...)`` and the
``.keras`` format save all of it.
"""

import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from daso_tf.algorithms.step_log_means import StepLogMeans
from daso_tf.grouped_updates import stacked_map
from daso_tf.models.classifier_network import ClassifierNetwork
from daso_tf.optimizers import reference_sgd


def replica_context():
    """The current replica context, or None outside one (cross-replica context)."""
    return tf.distribute.get_replica_context()


def num_replicas_in_sync():
    context = replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def all_gather(tensor):
    """Concatenate ``tensor`` over replicas along axis 0 (identity on one replica).

    The gathered order equals the global batch order, so state updated from gathered
    tensors matches a one-device run (docs/algorithm.md section 6).
    """
    context = replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    return context.all_gather(tensor, axis=0)


def clone_backbone(backbone):
    """A fresh, structurally identical copy of ``backbone`` (weights copied later)."""
    try:
        return keras.models.clone_model(backbone)
    except Exception as error:  # subclassed models without a usable get_config
        raise ValueError(
            f"Could not copy the backbone {backbone.name!r} for the EMA network: {error}. "
            "A backbone must be a functional/Sequential model or a subclassed model whose "
            "get_config()/from_config() recreate it."
        ) from error


class SemiSupervisedModel(keras.Model):
    """Base of every learner: online + EMA networks, step counter, shared train step.

    Args:
        backbone: Keras model mapping normalised float images [B, H, W, 3] to features [B, D].
        num_classes: number of classes K.
        normalization: ``(mean, std)``; when set, inputs are pixels in [0, 255].
        labeled_class_counts: per-class labeled counts N_k (the labeled prior, used by logit
            adjustment and the test-time logit-adjusted metric).
        ema_decay: the EMA decay cap (0.999).
        class_names: optional list of K names, kept for export.
        augment_on_device: the training batches hold RAW uint8 images,
            ``((x_l, y_l), (u[, u_true]))`` (``train_stream(..., augment_on_device=True)``),
            and the train step augments them itself (weak x_l, the learner's
            ``unlabeled_views`` of u) with ``daso_tf.data.pipeline.augmentation_keys(
            augment_seed, step)``: on one device exactly the images ``train_stream`` would
            have made on the host, so runs stay deterministic and resumable; inside an XLA
            step too, so the host only batches uint8.
        augment_seed: the data seed of those keys (the stream's ``seed``).
        auxiliary_heads, evaluation_head: set by learners, not users: extra linear heads
            ``[(name, units)]`` of both networks, and the head the networks' ``call`` (hence
            evaluate / predict / export) uses.
    """

    # What the learner's reference feeds it as unlabeled views, in order ("identity", "weak"
    # or "strong"; the data pipeline's standard layout is ("weak", "strong")). See
    # select_unlabeled_views.
    unlabeled_views = ("weak", "strong")
    # How the run draws labeled batches: None = without replacement, reshuffled every epoch
    # (the reference's RandomSampler); a number = class-aware sampling with that beta (the
    # reference's ClassAwareSampler; see daso_tf.data.pipeline.class_aware_weights).
    sampler_beta = None
    # Whether training batches must carry each unlabeled sample's dataset index (u_index).
    needs_unlabeled_indices = False
    # Whether the train step can be XLA-compiled (runtime.jit_compile=auto turns XLA on only then).
    xla_compatible = True

    # Constructor arguments that are not hyper-parameters: what the data and the program
    # supply, and the heads learners set themselves. Every other constructor argument of a
    # learner (and of its bases) is a hyper-parameter: its default is the reference value,
    # get_config() records it, and run.py takes it as ``algorithm.<name>``.
    NOT_HYPERPARAMETERS = ("backbone", "num_classes", "normalization", "labeled_class_counts",
                           "class_names", "augment_on_device", "augment_seed",
                           "auxiliary_heads", "evaluation_head")

    def __init__(self, backbone, num_classes, normalization=None, labeled_class_counts=None,
                 ema_decay=0.999, class_names=None, auxiliary_heads=None,
                 evaluation_head="classifier", augment_on_device=False, augment_seed=0, **kwargs):
        super().__init__(**kwargs)
        num_classes = int(num_classes)
        if labeled_class_counts is not None:
            labeled_class_counts = [int(c) for c in labeled_class_counts]
            if len(labeled_class_counts) != num_classes or min(labeled_class_counts) <= 0:
                raise ValueError(
                    f"labeled_class_counts must hold {num_classes} positive counts; "
                    f"got {labeled_class_counts}."
                )
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) != num_classes:
                raise ValueError(f"class_names must hold {num_classes} names; got {len(class_names)}.")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {ema_decay}.")
        self.num_classes = num_classes
        self.labeled_class_counts = labeled_class_counts
        self.class_names = class_names
        self.ema_decay = float(ema_decay)
        self.augment_on_device = bool(augment_on_device)
        self.augment_seed = int(augment_seed)
        heads = dict(auxiliary_heads=auxiliary_heads, output_head=evaluation_head)
        self.online_network = ClassifierNetwork(
            backbone, num_classes, normalization=normalization, name="online_network", **heads)
        self.ema_network = ClassifierNetwork(
            clone_backbone(backbone), num_classes, normalization=normalization, name="ema_network",
            **heads)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.step_log_means = StepLogMeans()

    # ------------------------------------------------------------------ structure
    @property
    def backbone(self):
        return self.online_network.backbone

    @property
    def ema_backbone(self):
        return self.ema_network.backbone

    @property
    def evaluation_network(self):
        """The network evaluate / predict / export use: the EMA network (its ``call`` returns
        the logits of ``evaluation_head``)."""
        return self.ema_network

    @property
    def normalization(self):
        return self.online_network.normalization

    def build(self, input_shape):
        """Create all variables for images of ``input_shape`` ([B, H, W, C] or [H, W, C])."""
        image_shape = tuple(input_shape)[-3:]
        if any(d is None for d in image_shape) or len(image_shape) != 3:
            raise ValueError(f"build() needs a concrete image shape (H, W, C); got {input_shape}.")
        dummy = ops.zeros((1,) + image_shape, dtype="float32")
        features = self.online_network.features(dummy)
        self.online_network.build_heads(features)
        if len(features.shape) != 2:
            raise ValueError(
                f"The backbone must return pooled features [batch, D]; it returned shape "
                f"{tuple(features.shape)}."
            )
        self.ema_network.build_heads(self.ema_network.features(dummy))
        # Built piecewise above; tell Keras so that fit() does not try a symbolic build
        # with the training batch structure.
        self.online_network.built = self.ema_network.built = True
        self._check_twin_networks()
        for ema_weight, weight in zip(self.ema_network.weights, self.online_network.weights):
            ema_weight.assign(weight)
            # The EMA network is state, not trained. Its layers stay `trainable` so that its
            # BatchNorm uses batch statistics when it encodes labeled images (spec section 3),
            # but its variables are hidden from the optimiser.
            ema_weight.trainable = False
        self.feature_dim = int(features.shape[-1])
        self.image_shape = image_shape
        self.step = self.add_weight(
            name="step", shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica")
        diagnostics = dict(trainable=False, dtype="int64", initializer="zeros",
                           aggregation="only_first_replica")
        # Rows: true class of unlabeled samples (where known); columns: pseudo-label; only
        # samples that pass the mask. Read and reset by pseudo_label_diagnostics().
        self.pl_confusion = self.add_weight(
            name="pseudo_label_confusion", shape=(self.num_classes, self.num_classes), **diagnostics)
        # The same over every unlabeled sample, selected or not (the DASO paper's Fig. 1 view).
        self.pl_confusion_all = self.add_weight(
            name="pseudo_label_confusion_all", shape=(self.num_classes, self.num_classes), **diagnostics)
        self.pl_counts = self.add_weight(name="pseudo_label_counts", shape=(2,), **diagnostics)
        self.build_state(self.feature_dim)
        self.built = True

    def build_state(self, feature_dim):
        """Hook: create the learner's own state (queues, histograms, extra heads)."""

    def _check_twin_networks(self):
        online, ema = self.online_network.weights, self.ema_network.weights
        if len(online) != len(ema) or any(a.shape != b.shape for a, b in zip(online, ema)):
            raise ValueError(
                "The EMA copy of the backbone does not have the same variables as the backbone; "
                "make sure the backbone's get_config()/from_config() recreate it exactly."
            )

    # ------------------------------------------------------------------ compile / fit
    def compile(self, optimizer=None, **kwargs):
        """Compile with the reference optimiser by default (spec step 9).

        The losses are the algorithm's own; ``loss=`` and ``metrics=`` are refused.
        """
        for key in ("loss", "metrics", "loss_weights", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"{type(self).__name__}.compile() does not take `{key}`: the algorithm defines "
                    "its losses; evaluation reports loss and accuracy of the EMA network."
                )
            kwargs.pop(key, None)
        super().compile(optimizer=self.default_optimizer() if optimizer is None else optimizer, **kwargs)

    @classmethod
    def hyperparameters(cls):
        """``{name: reference default}`` of the learner's hyper-parameters: its constructor
        arguments and those of its bases up to this class, less ``NOT_HYPERPARAMETERS``
        (the most derived class's default wins)."""
        defaults = {}
        mro = cls.__mro__
        for klass in reversed(mro[:mro.index(SemiSupervisedModel) + 1]):
            if "__init__" not in vars(klass):
                continue
            for parameter in list(inspect.signature(klass.__init__).parameters.values())[1:]:
                if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                    defaults[parameter.name] = parameter.default
        return {name: value for name, value in defaults.items() if name not in cls.NOT_HYPERPARAMETERS}

    @classmethod
    def default_optimizer(cls, learning_rate=None, momentum=None, nesterov=None, weight_decay=None,
                          total_steps=None):
        """The learner's reference optimiser, which ``compile()`` uses by default.

        Here the reference SGD (``daso_tf.optimizers.reference_sgd``: constant learning rate
        0.03, Nesterov momentum 0.9, coupled L2 5e-4); a learner with another reference
        optimiser overrides this (e.g. Supervised's schedule). Arguments that are not None
        replace the reference values (``weight_decay`` is the coupled L2 coefficient);
        ``total_steps`` is the run's length, for learners whose schedule depends on it.
        """
        del total_steps  # a constant learning rate
        overrides = dict(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, l2=weight_decay)
        return reference_sgd(**{name: value for name, value in overrides.items() if value is not None})

    @classmethod
    def data_arguments(cls, config, lt_data):
        """Hook: constructor arguments the run derives from the data (beyond the labeled
        counts, class names and normalisation every learner gets), e.g. the size of the
        unlabeled set. ``config`` is the run's ``ExperimentConfig``, ``lt_data`` its
        ``LongTailedData``. Their names belong in ``NOT_HYPERPARAMETERS``."""
        del config, lt_data
        return {}

    @classmethod
    def check_run_config(cls, config, stored=None):
        """Hook: raise ``daso_tf.config.ConfigError`` (one line) for a run configuration this
        learner cannot train, before anything is written; ``stored`` is the config of the run
        being resumed (None for a new run)."""
        del config, stored

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer, under any tf.distribute strategy, pulls one batch out of the
        # training iterator to build the model symbolically (calling it on the whole nested
        # training tuple) and drops that batch; under MultiWorkerMirroredStrategy it also
        # fails to reduce the nested batch. This model is built explicitly (build() / fit()),
        # so only the optimiser may still need its variables.
        if not self.built:
            raise ValueError(f"{type(self).__name__} must be built before fit/evaluate: call "
                             "model.build((None, H, W, 3)) inside the strategy scope.")
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        # Our compile() is custom, so Keras will not re-compile a loaded .keras model by
        # itself; do it, then build the optimiser so its saved slots are restored too.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**{k: v for k, v in config.items() if v is not None})
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, *args, **kwargs):
        if not self.built:
            self.build(self._image_shape_from_data(x))
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        if not self.built:
            raise ValueError(f"{type(self).__name__} must be built (trained or restored) before evaluate().")
        return super().evaluate(x, *args, **kwargs)

    @staticmethod
    def _image_shape_from_data(data):
        spec = getattr(data, "element_spec", None)
        if spec is None:
            raise ValueError(
                "fit() needs a tf.data.Dataset yielding ((x_labeled, y_labeled), (u_weak, u_strong)) "
                "to build the model, or call model.build((None, H, W, 3)) first."
            )
        try:
            image_spec = spec[0][0]
        except (TypeError, IndexError, KeyError):
            raise ValueError(
                "The training dataset must yield ((x_labeled, y_labeled), (u_weak, u_strong)); "
                f"its element_spec is {spec}."
            ) from None
        return tuple(image_spec.shape)

    # ------------------------------------------------------------------ inference
    def call(self, images, training=False):
        """EMA network logits, inference mode (what evaluate/predict/export use)."""
        del training  # the EMA network is never trained through __call__
        return self.ema_network(images, training=False)

    def export(self, export_dir, *, model_name="daso", version=None, class_names=None,
               overwrite=False, max_image_pixels=None):
        """Export the EMA network for TF Serving: ``<export_dir>/<model_name>/<version>/``.

        uint8 images of any size in (resized to the training resolution inside), probabilities,
        class ids and class names out; see ``daso_tf.serving.export_saved_model``. Returns the version
        directory. (This replaces ``keras.Model.export``: the serving layout is the export a
        trained learner needs.)
        """
        if not self.built:
            raise ValueError(f"{type(self).__name__} must be built (trained or restored) before export().")
        from daso_tf.serving import export_saved_model

        names = class_names or self.class_names or [str(k) for k in range(self.num_classes)]
        return export_saved_model(self, export_dir, model_name=model_name, version=version,
                                  class_names=names, image_size=self.image_shape[:2],
                                  overwrite=overwrite, max_image_pixels=max_image_pixels)

    @tf.autograph.experimental.do_not_convert  # plain graph code: no AutoGraph rewriting
    def test_step(self, data):
        images, labels = self._unpack_eval_batch(data)
        logits = self.ema_network(images, training=False)
        logits = ops.cast(logits, "float32")
        loss = ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        self.loss_tracker.update_state(loss, sample_weight=ops.shape(labels)[0])
        self.accuracy_tracker.update_state(labels, logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def reset_metrics(self):
        # fit() calls this at every epoch start: the train logs are epoch means, as Keras' own.
        super().reset_metrics()
        self.step_log_means.reset_state()

    def _unpack_eval_batch(self, data):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            raise ValueError("evaluate() needs batches of (images, labels).")
        images, labels = tf.convert_to_tensor(data[0]), tf.convert_to_tensor(data[1])
        self._check_images("images", images)
        self._check_labels("labels", labels)
        return images, labels

    # ------------------------------------------------------------------ training
    def unpack_train_batch(self, data):
        """Validate and name the parts of ((x_l, y_l), (u_w, u_s[, u_true[, u_index]])).

        The unlabeled part may hold other image views, ``(view_0, ..., view_n-1[, u_true[,
        u_index]])`` (u_true and the dataset indices u_index are told apart from the views by
        their rank 1; ``train_stream(..., with_unlabeled_indices=True)``); ``select_unlabeled_views``
        maps the views to what the learner uses, ``batch["u_views"]``. ``batch["u_w"]`` /
        ``batch["u_s"]`` are the first two of those (``u_s`` is None for a one-view learner).
        """
        structure_error = ValueError(
            "Training batches must be ((x_labeled, y_labeled), (u_weak, u_strong)) or "
            "((x_labeled, y_labeled), (u_weak, u_strong, u_true_labels)); got "
            f"{tf.nest.map_structure(lambda t: getattr(t, 'shape', t), data)}."
        )
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise structure_error
        labeled, unlabeled = data
        if not isinstance(labeled, (tuple, list)) or len(labeled) != 2:
            raise structure_error
        if not isinstance(unlabeled, (tuple, list)) or not unlabeled:
            raise structure_error
        labeled = [tf.convert_to_tensor(t) for t in labeled]
        unlabeled = [tf.convert_to_tensor(t) for t in unlabeled]
        per_sample = []  # (u_true[, u_index]): the trailing rank-1 entries, after at least one view
        while len(unlabeled) >= 2 and len(unlabeled[-1].shape) == 1 and len(per_sample) < 2:
            per_sample.insert(0, unlabeled.pop())
        u_true, u_index = (per_sample + [None, None])[:2]
        if self.needs_unlabeled_indices and u_index is None:
            raise ValueError(
                f"{type(self).__name__} needs each unlabeled sample's dataset index: batches "
                "((x_labeled, y_labeled), (u_weak, u_strong, u_true_labels, u_indices)), e.g. "
                "train_stream(..., with_unlabeled_indices=True).")
        views = self.select_unlabeled_views(unlabeled)
        batch = {"x_l": labeled[0], "y_l": labeled[1], "u_w": views[0],
                 "u_s": views[1] if len(views) > 1 else None, "u_views": views, "u_true": u_true,
                 "u_index": u_index}
        self._check_images("x_l", batch["x_l"])
        for index, view in enumerate(views):
            self._check_images(("u_w", "u_s")[index] if index < 2 else f"unlabeled view {index}", view)
        self._check_labels("y_labeled", batch["y_l"])
        if batch["u_true"] is not None:
            self._check_labels("u_true_labels", batch["u_true"], allow_unknown=True)
        if u_index is not None and not tf.as_dtype(u_index.dtype).is_integer:
            raise ValueError(f"u_indices must be integer dataset indices; got dtype {u_index.dtype.name}.")
        sizes = [view.shape[0] for view in views]
        if None not in sizes and len(set(sizes)) > 1:
            raise ValueError(
                f"The unlabeled views must hold the same images; got batch sizes {sizes}.")
        return batch

    def select_unlabeled_views(self, views):
        """The unlabeled image views this learner uses, from the batch's views.

        Default: exactly ``len(self.unlabeled_views)`` views (FixMatch: (weak, strong)).
        Learners whose reference uses other views override this to also accept the standard
        (weak, strong) layout (documented per learner).
        """
        if len(views) != len(self.unlabeled_views):
            raise ValueError(
                f"{type(self).__name__} takes {len(self.unlabeled_views)} unlabeled views "
                f"{self.unlabeled_views}; the batch holds {len(views)}.")
        return list(views)

    def select_weak_and_two_strong_views(self, views):
        """``select_unlabeled_views`` of the learners with views (weak, strong, strong)
        (ReMixMatch, ACR): the standard (weak, strong) layout is accepted too, its u_s then
        serving as both strong views."""
        if len(views) == 3:
            return list(views)
        if len(views) == 2:
            return [views[0], views[1], views[1]]
        raise ValueError(f"{type(self).__name__} takes unlabeled views (weak, strong, strong) or "
                         f"(weak, strong); the batch holds {len(views)}.")

    def _check_images(self, name, images):
        shape = images.shape
        if len(shape) != 4:
            raise ValueError(f"{name} must be images [batch, H, W, C]; got shape {tuple(shape)}.")
        expected = getattr(self, "image_shape", None)
        if expected is not None and shape[-1] is not None and shape[-1] != expected[-1]:
            raise ValueError(f"{name} must have {expected[-1]} channels (channels last); got shape {tuple(shape)}.")
        if not (tf.as_dtype(images.dtype).is_floating or tf.as_dtype(images.dtype).is_integer):
            raise ValueError(f"{name} must be uint8 or float pixels; got dtype {images.dtype.name}.")

    def _check_labels(self, name, labels, allow_unknown=False):
        if len(labels.shape) != 1:
            raise ValueError(f"{name} must be integer class ids [batch]; got shape {tuple(labels.shape)}.")
        if not tf.as_dtype(labels.dtype).is_integer:
            raise ValueError(f"{name} must be integer class ids; got dtype {labels.dtype.name}.")
        if getattr(self, "jit_compile", False):
            return  # XLA cannot run assertions; the data helpers validate labels up front.
        # Unlabeled ground truth: -1 unknown, -2 a labeled image in the unlabeled set (ACR's split).
        lower = -2 if allow_unknown else 0
        tf.debugging.assert_greater_equal(
            labels, tf.cast(lower, labels.dtype), message=f"{name}: class id below {lower}")
        tf.debugging.assert_less(
            labels, tf.cast(self.num_classes, labels.dtype),
            message=f"{name}: class id >= num_classes ({self.num_classes})")

    @tf.autograph.experimental.do_not_convert  # plain graph code: no AutoGraph rewriting
    def train_step(self, data):
        """One training step; returns the means of every scalar log (``loss``, ``loss_x``,
        ``mask``, ...) over the steps since the last ``reset_metrics()`` (each epoch start, as
        Keras' own metrics; run.py's TensorBoard callback also resets every ``log_interval``).
        The sums stay on the device (``step_log_means``): reading them is the only sync."""
        logs, _ = self.train_step_with_outputs(data)
        self.step_log_means.update_state(logs)
        return self.step_log_means.result()

    @tf.autograph.experimental.do_not_convert  # plain graph code: no AutoGraph rewriting
    def train_step_with_outputs(self, data):
        """One training step; returns (logs, per-sample outputs of this replica).

        The outputs (``pseudo_labels``, ``mask``, ...) are what a replay or a diagnostic
        needs to compare with the reference; ``fit`` only uses the logs.
        """
        step = ops.convert_to_tensor(self.step)
        if self.augment_on_device:
            data = self.augment_raw_batch(data, step)
        batch = self.unpack_train_batch(data)
        self.before_online_forward(batch, step)
        with tf.GradientTape() as tape:
            losses, outputs = self.forward_and_compute_losses(batch, step)
            # Gradients are summed over replicas: scale each replica's mean loss so the sum
            # is the global-batch mean (docs/algorithm.md section 6).
            scaled_loss = losses["loss"] / ops.cast(num_replicas_in_sync(), losses["loss"].dtype)
            scaled_loss = self.optimizer.scale_loss(scaled_loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)
        self.update_ema(step)
        self.after_optimizer_step(batch, outputs, step)
        self.update_pseudo_label_diagnostics(batch, outputs)
        # Stateful ops on different variables are not ordered in a graph: without this
        # dependency the counter would also advance on a call whose input ran out.
        with tf.control_dependencies([scaled_loss]):
            self.step.assign(step + 1)
        logs = dict(losses)
        logs["mask"] = ops.mean(ops.cast(outputs["mask"], "float32")) if "mask" in outputs else 0.0
        return logs, outputs

    def augment_raw_batch(self, data, step):
        """((x_l, y_l), (u[, u_true])) raw uint8 -> ((x_l, y_l), (view_0, ...[, u_true])), the
        batch ``train_stream`` makes on the host for ``step`` (see ``augment_on_device``)."""
        from daso_tf.data import augment, pipeline

        unlabeled = data[1] if isinstance(data, (tuple, list)) and len(data) == 2 else ()
        unlabeled = [tf.convert_to_tensor(t) for t in unlabeled]
        if not 1 <= len(unlabeled) <= 3 or len(unlabeled[0].shape) != 4 \
                or any(len(t.shape) != 1 for t in unlabeled[1:]):
            raise ValueError("augment_on_device=True needs batches ((x_labeled, y_labeled), "
                             "(u_raw[, u_true[, u_index]])) of raw images: "
                             "train_stream(..., augment_on_device=True).")
        x_l, y_l = data[0]
        views = tuple(self.unlabeled_views) or ("weak",)
        keys = pipeline.augmentation_keys(self.augment_seed, step, len(views))
        context = replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # Each replica holds a slice of the global batch: distinct draws per replica
            # (deterministic, but not the one-device images).
            replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
            keys = tf.stack([tf.random.experimental.stateless_fold_in(key, replica, alg="philox")
                             for key in tf.unstack(keys)])
        # XLA needs the static-shape variant of RandAugment (same images, see augment.apply_ops).
        static_shapes = bool(getattr(self, "jit_compile", False))
        x_l, u_views = pipeline.augment_batch(
            x_l, unlabeled[0], keys, views,
            strong=lambda images, seed: augment.strong_augment(images, seed, static_shapes=static_shapes),
            output_size=self.image_shape[0])
        return (x_l, y_l), u_views + tuple(unlabeled[1:])

    def update_pseudo_label_diagnostics(self, batch, outputs):
        """Accumulate mask rate and (with u_true) the confusion of the pseudo-labels: of the
        selected (masked-in) ones, and of all of them."""
        if "mask" not in outputs or "pseudo_labels" not in outputs:
            return
        mask = all_gather(ops.cast(outputs["mask"], "float32")) > 0
        counts = ops.stack([ops.sum(ops.cast(mask, "int64")), ops.cast(ops.shape(mask)[0], "int64")])
        self.pl_counts.assign(self.pl_counts + counts)
        if batch["u_true"] is None:
            return
        truth = ops.cast(all_gather(batch["u_true"]), "int32")
        predicted = ops.cast(all_gather(outputs["pseudo_labels"]), "int32")
        cells = self.num_classes ** 2
        every = ops.where(truth >= 0, truth * self.num_classes + predicted, -1)
        selected = ops.where(mask, every, -1)
        # A count per (truth, pseudo-label) cell; -1 (unknown truth / not selected) is dropped.
        # No [N, K*K] one-hot (10 MB a step for CIFAR-100's 128 unlabeled samples and 10,000 cells).
        ones = ops.ones_like(every, "int64")
        shape = (self.num_classes, self.num_classes)
        self.pl_confusion.assign(self.pl_confusion + ops.reshape(
            tf.math.unsorted_segment_sum(ones, selected, cells), shape))
        self.pl_confusion_all.assign(self.pl_confusion_all + ops.reshape(
            tf.math.unsorted_segment_sum(ones, every, cells), shape))

    def pseudo_label_diagnostics(self, reset=True):
        """Pseudo-label quality since the last call (host side; for logging).

        Returns {"mask_rate": float, "num_selected": int, "num_unlabeled": int,
        "precision": [K], "recall": [K], "selected": [K], "confusion": [K, K],
        "confusion_all": [K, K]}; precision/recall are NaN where undefined (no selected sample
        of that class / no unlabeled ground truth). ``precision``/``recall``/``selected``/
        ``confusion`` are over the unlabeled samples that passed the mask; ``confusion_all``
        (rows: true class, columns: pseudo-label) over every unlabeled sample with a known class.
        """
        from daso_tf.training.evaluation import precision_recall

        confusion = np.asarray(self.pl_confusion.numpy(), dtype="float64")
        passed, total = (int(c) for c in self.pl_counts.numpy())
        precision, recall = precision_recall(np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1))
        result = {
            "mask_rate": passed / total if total else float("nan"),
            "num_selected": passed,
            "num_unlabeled": total,
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "selected": confusion.sum(axis=0).astype(int).tolist(),
            "confusion": confusion.astype(int).tolist(),
            "confusion_all": np.asarray(self.pl_confusion_all.numpy()).astype(int).tolist(),
        }
        if reset:
            self.pl_confusion.assign(np.zeros_like(self.pl_confusion.numpy()))
            self.pl_confusion_all.assign(np.zeros_like(self.pl_confusion_all.numpy()))
            self.pl_counts.assign(np.zeros_like(self.pl_counts.numpy()))
        return result

    def forward_and_compute_losses(self, batch, step):
        """The online forward pass(es) and the losses, inside the gradient tape.

        Default: one pass over [x_l, u_w, u_s] (BatchNorm statistics over all of them), then
        ``compute_losses``. Learners with another forward (MixUp, teacher) override this.
        """
        (features_l, features_w, features_s), (logits_l, logits_w, logits_s) = self.online_forward(
            [batch["x_l"], batch["u_w"], batch["u_s"]])
        parts = {"features_l": features_l, "features_w": features_w, "features_s": features_s,
                 "logits_l": logits_l, "logits_w": logits_w, "logits_s": logits_s}
        return self.compute_losses(batch, parts, step)

    def online_forward(self, groups):
        """One training-mode pass of the online network over the concatenated image
        ``groups`` (BatchNorm statistics span all of them, as in the reference's single
        forward of the concatenation). Returns ``(features, logits)``: lists split back per
        group."""
        if len({group.dtype for group in groups}) > 1:
            groups = [ops.cast(group, "float32") for group in groups]
        features, logits = self.online_network.features_and_logits(ops.concatenate(groups, axis=0),
                                                                   training=True)
        split_features, split_logits, start = [], [], 0
        for group in groups:
            end = start + ops.shape(group)[0]
            split_features.append(features[start:end])
            split_logits.append(logits[start:end])
            start = end
        return split_features, split_logits

    def compute_losses(self, batch, parts, step):
        """Return ({"loss": total, "loss_x": ..., ...}, outputs). Implemented by learners."""
        raise NotImplementedError

    def before_online_forward(self, batch, step):
        """Hook run before the online forward pass (DASO: enqueue EMA labeled features)."""

    def after_optimizer_step(self, batch, outputs, step):
        """Hook run after the optimiser and EMA updates (DASO: histogram bookkeeping)."""

    def update_ema(self, step):
        """ema = d*ema + (1-d)*w for every weight and BatchNorm statistic (spec section 1.10),
        with d = min(1 - 1/(t+1), ema_decay)."""
        t = ops.cast(step, "float64")
        self.average_into_ema(ops.minimum(1.0 - 1.0 / (t + 1.0), ops.convert_to_tensor(self.ema_decay, "float64")))

    def average_into_ema(self, decay, copy_batch_norm_statistics=False):
        """ema = decay*ema + (1-decay)*w (``decay`` a float64 scalar); with
        ``copy_batch_norm_statistics`` the non-trainable float variables (BatchNorm moving
        statistics) are copied instead.

        One stacked update per group of same-shaped variables (``stacked_map``: bit-identical
        to the per-variable formula, a few ops instead of a chain per variable).
        """
        # Integer state (e.g. a dropout layer's seed generator) is not averaged.
        pairs = [(ema_weight, weight) for ema_weight, weight in zip(self.ema_network.weights, self.online_network.weights)
                 if tf.as_dtype(ema_weight.dtype).is_floating]
        if copy_batch_norm_statistics:
            for ema_weight, weight in pairs:
                if not weight.trainable:
                    ema_weight.assign(ops.cast(weight, ema_weight.dtype))
            pairs = [(ema_weight, weight) for ema_weight, weight in pairs if weight.trainable]
        if not pairs:
            return
        ema_weights = [ema_weight for ema_weight, _ in pairs]
        weights = [ops.cast(weight, ema_weight.dtype) for ema_weight, weight in pairs]

        def average(ema, weight):
            return (ops.cast(decay, ema.dtype) * ema + ops.cast(1.0 - decay, ema.dtype) * weight,)

        (averages,) = stacked_map(average, ema_weights, weights)
        for ema_weight, value in zip(ema_weights, averages):
            ema_weight.assign(value)

    # ------------------------------------------------------------------ helpers for learners
    def loss_dtype(self):
        """Losses and pseudo-labels are computed in the variable dtype (float32 under mixed
        precision, float64 under a float64 policy)."""
        return self.dtype_policy.variable_dtype

    def labeled_prior(self):
        if self.labeled_class_counts is None:
            raise ValueError(
                f"{type(self).__name__} needs labeled_class_counts for logit adjustment / ABC.")
        counts = np.asarray(self.labeled_class_counts, dtype="float64")
        return ops.convert_to_tensor(counts / counts.sum(), dtype=self.loss_dtype())

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.online_network.backbone),
            "num_classes": self.num_classes,
            "normalization": self.online_network.normalization,
            "labeled_class_counts": self.labeled_class_counts,
            "ema_decay": self.ema_decay,
            "class_names": self.class_names,
        })
        if self.augment_on_device:  # absent when off: configs of plain models are unchanged
            config.update({"augment_on_device": True, "augment_seed": self.augment_seed})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
