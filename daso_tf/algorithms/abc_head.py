"""ABC, the auxiliary balanced classifier (Lee et al., 2021), as the DASO reference runs it.

Reference: ytaek-oh/daso ``lib/algorithm/fm_abc.py`` and the ABC part of
``lib/models/daso_model.py`` (docs/algorithm.md section 5). A second linear head on the shared
features is trained with

    balance_k    = N_K / N_k                      (N_K: count of the LAST class, the tail)
    loss_abc_x   = mean_B( Bernoulli(balance[y]) * CE(abc_logits_l, y) )
    p_abc        = softmax(abc_logits_w)          (no gradient; DASO: blended with q, see below)
    keep_t       = 1 - (t // 500) / 500 * (1 - balance)        (gradually balanced, t 0-based)
    mask         = [max p_abc >= threshold] * Bernoulli(keep_t[argmax p_abc])
    loss_abc_u   = mean_Bu( mask * -sum_k p_abc_k log softmax(abc_logits_s)_k )   (soft target)
    loss_abc     = loss_abc_x + loss_abc_u                       (added with weight 1)

and evaluation uses the ABC head. With DASO (after its warm-up) p_abc is blended with the
semantic pseudo-label q using the same distribution-aware weights v, looked up at
argmax p_abc, before the confidence and the masks are taken.

Bernoulli draws use ``uniform < probability`` with uniforms from the model's
``keras.random.SeedGenerator`` (checkpointed), so runs are reproducible and resumable.
"""

import keras
import numpy as np
from keras import ops

from daso_tf.pseudo_labels import blend_pseudo_labels

ABC_HEAD = "abc_classifier"
# The reference hard-codes 500 "epochs" of 500 steps (250k steps) for the gradual mask.
ABC_EPOCH_STEPS = 500
ABC_NUM_EPOCHS = 500


def abc_balance_probabilities(labeled_class_counts):
    """Bernoulli parameters N_K / N_k of the labeled mask (the reference divides by the LAST
    class's count, the tail of a long-tailed split); clipped to 1 if another class is rarer."""
    counts = np.asarray(labeled_class_counts, dtype="float64")
    if counts.ndim != 1 or counts.size < 2 or (counts <= 0).any():
        raise ValueError(f"ABC needs positive labeled_class_counts for every class; got {counts}.")
    return np.minimum(counts[-1] / counts, 1.0)


def abc_unlabeled_keep_probabilities(balance, step, epoch_steps=ABC_EPOCH_STEPS,
                                     num_epochs=ABC_NUM_EPOCHS):
    """``1 - (step // epoch_steps) / num_epochs * (1 - balance)``, `[K]` (1 at the start,
    ``balance`` after ``epoch_steps * num_epochs`` steps)."""
    balance = ops.convert_to_tensor(balance)
    epoch = ops.cast(ops.floor_divide(ops.cast(step, "int64"), epoch_steps), balance.dtype)
    return 1.0 - epoch / float(num_epochs) * (1.0 - balance)


def abc_losses(labeled_logits, labels, weak_logits, strong_logits, balance, step, threshold,
               labeled_uniform, unlabeled_uniform, semantic_probs=None, class_weights=None,
               epoch_steps=ABC_EPOCH_STEPS, num_epochs=ABC_NUM_EPOCHS):
    """ABC's losses for one step; returns ``(loss_abc, details)``.

    Args:
        labeled_logits / weak_logits / strong_logits: ABC-head logits of x_l, u_w, u_s.
        labels: `[B]` labels.
        balance: `[K]` ``abc_balance_probabilities``.
        step: 0-based training step.
        threshold: confidence threshold (0.95).
        labeled_uniform / unlabeled_uniform: `[B]` / `[B_u]` uniforms in [0, 1) for the
            Bernoulli masks (mask = uniform < probability).
        semantic_probs, class_weights: DASO's q `[B_u, K]` and v `[K]`: when given, the
            target is blended ``(1 - v[argmax p_abc]) p_abc + v[argmax p_abc] q``.

    ``details``: loss_abc_x, loss_abc_u, labeled_mask, unlabeled_mask (confidence AND
    Bernoulli), abc_probs (the target), abc_pseudo_labels.
    """
    labeled_logits = ops.convert_to_tensor(labeled_logits)
    dtype = labeled_logits.dtype
    balance = ops.cast(balance, dtype)
    labels = ops.cast(labels, "int32")
    labeled_mask = ops.cast(ops.cast(labeled_uniform, dtype) < ops.take(balance, labels), dtype)
    per_sample_x = ops.sparse_categorical_crossentropy(labels, labeled_logits, from_logits=True)
    loss_x = ops.mean(labeled_mask * ops.cast(per_sample_x, dtype))

    probs = ops.softmax(ops.stop_gradient(ops.cast(weak_logits, dtype)), axis=-1)
    if semantic_probs is not None:
        probs = ops.cast(blend_pseudo_labels(probs, semantic_probs, class_weights), dtype)
    pseudo_labels = ops.argmax(probs, axis=-1)
    confident = ops.cast(ops.max(probs, axis=-1) >= ops.convert_to_tensor(threshold, dtype), dtype)
    keep = abc_unlabeled_keep_probabilities(balance, step, epoch_steps, num_epochs)
    kept = ops.cast(ops.cast(unlabeled_uniform, dtype) < ops.take(keep, pseudo_labels), dtype)
    unlabeled_mask = confident * kept
    log_probs = ops.log_softmax(ops.cast(strong_logits, dtype), axis=-1)
    loss_u = -ops.mean(unlabeled_mask * ops.sum(probs * log_probs, axis=-1))
    details = {"loss_abc_x": loss_x, "loss_abc_u": loss_u, "labeled_mask": labeled_mask,
               "unlabeled_mask": unlabeled_mask, "abc_probs": probs,
               "abc_pseudo_labels": pseudo_labels}
    return loss_x + loss_u, details


class AuxiliaryBalancedClassifierMixin:
    """The ABC head on a FixMatch-style learner (FixMatchABC, DASO(abc=True)).

    The learner passes ``auxiliary_heads=abc_heads(...)`` and ``evaluation_head=ABC_HEAD``
    to the base, creates ``self.seed_generator`` and calls ``abc_extra_losses`` from its
    ``extra_losses`` hook.
    """

    @staticmethod
    def abc_heads(num_classes):
        return [(ABC_HEAD, int(num_classes))]

    def init_abc(self, seed):
        if self.labeled_class_counts is None:
            raise ValueError(f"{type(self).__name__} with ABC needs labeled_class_counts "
                             "(the Bernoulli parameters N_K / N_y).")
        self.abc_balance = [float(b) for b in abc_balance_probabilities(self.labeled_class_counts)]
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.seed_state = self.seed_generator.state  # tracked, so tf.train.Checkpoint saves it

    def abc_extra_losses(self, parts, step, semantic_probs=None, class_weights=None, active=None):
        dtype = self.loss_dtype()
        head = self.online_network.head(ABC_HEAD)
        logits = {key: ops.cast(head(parts[f"features_{key}"]), dtype) for key in ("l", "w", "s")}
        num_labeled = ops.shape(logits["l"])[0]
        num_unlabeled = ops.shape(logits["w"])[0]
        labeled_uniform = keras.random.uniform((num_labeled,), seed=self.seed_generator, dtype=dtype)
        unlabeled_uniform = keras.random.uniform((num_unlabeled,), seed=self.seed_generator, dtype=dtype)
        arguments = (logits["l"], parts["labels"], logits["w"], logits["s"],
                     ops.convert_to_tensor(self.abc_balance, dtype), step, self.threshold,
                     labeled_uniform, unlabeled_uniform)
        loss, details = abc_losses(*arguments)
        if semantic_probs is not None:
            blended_loss, blended = abc_losses(*arguments, semantic_probs=semantic_probs,
                                               class_weights=class_weights)
            loss = ops.where(active, blended_loss, loss)
            details = {key: ops.where(active, blended[key], details[key]) for key in details}
        return loss, details
