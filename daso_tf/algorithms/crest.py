"""CReST / CReST+ generations (Wei et al., CVPR 2021) as the DASO reference runs them
(``lib/algorithm/fm_crest.py``, ``rm_crest.py``, ``base_algorithm.train``).

Training is split into ``num_generations`` generations of ``total_steps // num_generations``
steps (the reference: 5 x 50,000 of 250,000; a remainder joins the last generation). At
each boundary but the run's end, after that step's evaluation:

1. the EMA network (inference mode, evaluation transform) predicts the whole unlabeled set:
   confidence = max softmax, prediction = argmax (no distribution alignment);
2. per-class selection rates mu_k = (N_k / N_max)^(1 / alpha) (alpha 3) of the ORIGINAL
   labeled counts, used in reverse: samples predicted as class i keep the top
   int(mu[K-1-i] * n_i) by confidence (the head class gets the tail's rate; no threshold);
3. the new labeled set is the original labeled set plus this selection, labelled with the
   prediction (the previous generation's selection is dropped; selected images stay
   unlabeled too);
4. the online network gets fresh random weights, the EMA network a copy of them, the
   optimiser fresh state (momentum buffers and iteration count cleared).
Not reset: the step counter, the distribution-alignment queue and its target (the original
labeled prior), the data streams' positions. Per generation: the EMA warm-up
``min(1 - 1/(t+1), decay)`` and (ReMixMatch) the consistency ramp-up count t from the
generation's first step. CReST+ aligns pseudo-labels to the labeled prior raised to a
temperature that falls linearly over the generations (``progressive_alignment``):
t_g = 1 - g / (G - 1) * (1 - t_min), g = 0..G-1 (1.0, 0.875, 0.75, 0.625, 0.5).

``CReSTGenerations`` adds this to a learner (``FixMatchCReST``, ``ReMixMatchCReST``); its
state (generation, first step of the generation, the selection as one label per unlabeled
sample or -1) is model state, so a checkpoint holds it. The dataset-wide passes are driven
from outside the train step: ``daso_tf.training.generations.GenerationLoop`` (run.py, or a
Keras user's loop around ``fit``).
"""

import keras
import numpy as np
from keras import ops

from daso_tf.algorithms.base import SemiSupervisedModel, clone_backbone
from daso_tf.models.classifier_network import ClassifierNetwork


def selection_rates(labeled_class_counts, alpha):
    """mu_k = (N_k / max N)^(1 / alpha), float32 as the reference computes it [K]."""
    counts = np.asarray(labeled_class_counts, dtype="float32")
    return np.power(counts / counts.max(), np.float32(1.0 / alpha)).astype("float32")


def select_pseudo_labels(probs, rates):
    """The selection of one generation: [N] int64, class i for the top int(rates[K-1-i] * n_i)
    samples predicted as i (n_i of them; by confidence, ties to the lower index), else -1."""
    probs = np.asarray(probs)
    num_classes = probs.shape[1]
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    selected = np.full(len(probs), -1, dtype="int64")
    for k in range(num_classes):
        members = np.flatnonzero(predicted == k)
        count = int(np.float32(rates[num_classes - 1 - k]) * np.float32(len(members)))
        if count < 1:
            continue
        selected[members[np.argsort(-confidence[members], kind="stable")[:count]]] = k
    return selected


def progressive_temperature(generation, num_generations, minimum):
    """CReST+'s DA temperature of the 0-based ``generation``: linear from 1 to ``minimum``."""
    if num_generations <= 1:
        return 1.0
    factor = generation / (num_generations - 1)
    return 1.0 - factor + factor * minimum


class CReSTGenerations(SemiSupervisedModel):
    """Generations of self-training with class-rebalanced selection (module docstring).

    A base of learners, not a learner: ``class FixMatchCReST(CReSTGenerations, FixMatch)``.

    Args (beyond the learner's):
        num_generations: G (5); one generation lasts ``total_steps // num_generations`` steps.
        crest_alpha: alpha of the selection rates (3.0).
        progressive_alignment: CReST+'s falling DA temperature (True).
        alignment_temperature_min: its last value t_min (0.5).
        total_steps: the run's length.
        num_unlabeled: N_u, the size of the unlabeled set (data; the run fills it in).
    """

    NOT_HYPERPARAMETERS = SemiSupervisedModel.NOT_HYPERPARAMETERS + ("num_unlabeled",)

    def __init__(self, backbone, num_classes, num_generations=5, crest_alpha=3.0, progressive_alignment=True,
                 alignment_temperature_min=0.5, total_steps=250_000, num_unlabeled=None, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        if int(num_generations) < 1 or int(total_steps) < int(num_generations):
            raise ValueError(f"num_generations must be in [1, total_steps]; got {num_generations} "
                             f"(total_steps {total_steps}).")
        if float(crest_alpha) <= 0 or float(alignment_temperature_min) <= 0:
            raise ValueError(f"crest_alpha and alignment_temperature_min must be > 0; got {crest_alpha}, "
                             f"{alignment_temperature_min}.")
        if self.labeled_class_counts is None:
            raise ValueError(f"{type(self).__name__} needs labeled_class_counts (the selection rates).")
        self.num_generations = int(num_generations)
        self.crest_alpha = float(crest_alpha)
        self.progressive_alignment = bool(progressive_alignment)
        self.alignment_temperature_min = float(alignment_temperature_min)
        self.total_steps = int(total_steps)
        self.generation_period = self.total_steps // self.num_generations
        self.num_unlabeled = None if num_unlabeled is None else int(num_unlabeled)

    @classmethod
    def data_arguments(cls, config, lt_data):
        """The unlabeled set's size; DA off by default where the unlabeled class distribution
        is unknown (STL-10), as the reference's STL-10 CReST configs."""
        arguments = {"num_unlabeled": len(lt_data.unlabeled_labels)}
        if config.algorithm.distribution_alignment is None and lt_data.unlabeled_counts is None:
            arguments["distribution_alignment"] = False
        return arguments

    @classmethod
    def check_run_config(cls, config, stored=None):
        from daso_tf.config import ConfigError

        generations = config.algorithm.num_generations or cls.hyperparameters()["num_generations"]
        if generations > config.trainer.train_steps:
            raise ConfigError(f"algorithm.num_generations={generations}: expected at most trainer.train_steps="
                              f"{config.trainer.train_steps} (a generation lasts train_steps // num_generations "
                              "steps)")
        if stored is not None and stored.trainer.train_steps != config.trainer.train_steps:
            raise ConfigError(f"trainer.train_steps={config.trainer.train_steps}: learner {config.algorithm.name!r} "
                              f"splits the run into generations of train_steps // num_generations steps; the run in "
                              f"this model_dir has train_steps={stored.trainer.train_steps}, which cannot change")

    def build_state(self, feature_dim):
        super().build_state(feature_dim)
        state = dict(trainable=False, aggregation="only_first_replica")
        self.generation = self.add_weight(name="generation", shape=(), dtype="int64", initializer="zeros", **state)
        self.generation_start = self.add_weight(name="generation_start", shape=(), dtype="int64",
                                                initializer="zeros", **state)
        # The current labeled set's class counts: the original ones plus the selection.
        self.current_labeled_counts = self.add_weight(
            name="current_labeled_counts", shape=(self.num_classes,), dtype="float64",
            initializer=keras.initializers.Constant(self.labeled_class_counts), **state)
        if self.num_unlabeled is not None:
            self.pseudo_labeled = self.add_weight(
                name="pseudo_labeled", shape=(self.num_unlabeled,), dtype="int64",
                initializer=keras.initializers.Constant(-1), **state)

    # ------------------------------------------------------------------ in the train step
    def generation_step(self, step):
        """Steps since the current generation began (the per-generation schedules' t)."""
        return ops.convert_to_tensor(step) - ops.cast(self.generation_start, "int64")

    def alignment_temperature(self, step):
        """CReST+'s temperature of the current generation, or None without progressive DA."""
        if not self.progressive_alignment or self.num_generations <= 1:
            return None
        factor = ops.cast(self.generation, "float64") / (self.num_generations - 1)
        return 1.0 - factor + factor * self.alignment_temperature_min

    def update_ema(self, step):
        super().update_ema(self.generation_step(step))

    # ------------------------------------------------------------------ between steps (host)
    def generation_due(self, step):
        """The 0-based generation that runs at ``step`` (< total_steps)."""
        return min(int(step) // self.generation_period, self.num_generations - 1)

    def start_generation(self, unlabeled_probs, step):
        """Starts the next generation at ``step``: the selection from ``unlabeled_probs``
        ([N_u, K], the EMA network's softmax over the whole unlabeled set, in dataset order),
        fresh online weights, the EMA copy, fresh optimiser state. Returns the selection
        ([N_u]: a class, or -1)."""
        if self.num_unlabeled is None:
            raise ValueError(f"{type(self).__name__} needs num_unlabeled to start a generation.")
        probs = np.asarray(unlabeled_probs)
        if probs.shape != (self.num_unlabeled, self.num_classes):
            raise ValueError(f"unlabeled_probs must have shape {(self.num_unlabeled, self.num_classes)}; "
                             f"got {probs.shape}.")
        selected = select_pseudo_labels(probs, selection_rates(self.labeled_class_counts, self.crest_alpha))
        generation = int(self.generation.numpy()) + 1
        self.pseudo_labeled.assign(selected)
        added = np.bincount(selected[selected >= 0], minlength=self.num_classes)
        self.current_labeled_counts.assign(np.asarray(self.labeled_class_counts, "float64") + added)
        self.generation.assign(generation)
        self.generation_start.assign(int(step))
        self._fresh_weights(generation)
        self._fresh_optimizer_state()
        return selected

    def labeled_training_set(self, labeled_images, labeled_labels, unlabeled_images):
        """The current generation's labeled set: the original one plus the selection (in
        unlabeled-set order), as (images, labels)."""
        if self.num_unlabeled is None:
            return labeled_images, labeled_labels
        selected = np.asarray(self.pseudo_labeled.numpy())
        chosen = np.flatnonzero(selected >= 0)
        if not len(chosen):
            return labeled_images, labeled_labels
        images = np.concatenate([np.asarray(labeled_images), np.asarray(unlabeled_images)[chosen]])
        labels = np.concatenate([np.asarray(labeled_labels), selected[chosen].astype(np.asarray(labeled_labels).dtype)])
        return images, labels

    def _fresh_weights(self, generation):
        # A new twin of the online network, initialised as the first one was: seeded by
        # (seed, generation) when the learner has a seed, so a resumed run draws the same.
        seed = getattr(self, "seed", None)
        if seed is not None:
            keras.utils.set_random_seed(int(np.random.SeedSequence([int(seed), generation]).generate_state(1)[0]))
        online = self.online_network
        fresh = ClassifierNetwork(clone_backbone(online.backbone), self.num_classes,
                                  normalization=online.normalization, auxiliary_heads=online.auxiliary_heads,
                                  output_head=online.output_head, name="fresh_network")
        dummy = ops.zeros((1,) + tuple(self.image_shape), dtype="float32")
        fresh.build_heads(fresh.features(dummy))
        for target, source in zip(online.weights, fresh.weights):
            target.assign(source)
        for ema_weight, weight in zip(self.ema_network.weights, online.weights):
            ema_weight.assign(weight)

    def _fresh_optimizer_state(self):
        if getattr(self, "optimizer", None) is None or not self.optimizer.built:
            return
        # The reference builds a new optimiser: clear its slots (momentum) and iteration
        # count, keep its learning rate (and a loss-scale wrapper's scale).
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        kept = [optimizer.iterations, optimizer.learning_rate]
        for variable in optimizer.variables:
            if not any(variable is other for other in kept):
                variable.assign(ops.zeros(variable.shape, variable.dtype))
        optimizer.iterations.assign(0)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_generations": self.num_generations, "crest_alpha": self.crest_alpha,
            "progressive_alignment": self.progressive_alignment,
            "alignment_temperature_min": self.alignment_temperature_min, "total_steps": self.total_steps,
            "num_unlabeled": self.num_unlabeled,
        })
        return config
