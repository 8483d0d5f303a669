"""tf.data streams: the infinite training stream (labeled weak views + the unlabeled views a
learner asks for) and finite evaluation streams.

Batch k of the training stream is a pure function of (seed, k): the labeled and unlabeled
examples are read from per-epoch index draws seeded by (seed, stream, epoch) -- permutations
(sampling without replacement), or for class-aware labeled sampling N draws with replacement
-- laid end to end, and the augmentation seed of batch k is derived from (seed, k). Starting
at ``start_step=k`` therefore rebuilds exactly the batches an uninterrupted run sees from
step k on, in O(1) (one epoch is drawn, nothing is replayed).
"""

import numpy as np
import tensorflow as tf

from daso_tf.data import augment
from daso_tf.data.image_resize import resize_images

AUGMENTATIONS = ("reference", "keras_cv", "keras")
# What an unlabeled view can be: the image itself (only resized; USADTM), the weak
# flip + crop, or the strong flip + crop + RandAugment + Cutout.
VIEWS = ("identity", "weak", "strong")
_ALG = "philox"
_LABELED, _UNLABELED, _AUGMENT = 1, 2, 3
_MAX_EPOCHS = 1 << 40


def _base_seed(seed):
    return tf.constant([int(seed) & 0x7FFFFFFFFFFFFFFF, 0x0DA50], tf.int64)


def _fold(seed, value):
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64), alg=_ALG)


def index_batches(num_examples, batch_size, seed, start_step=0, stream=_LABELED,
                  example_weights=None):
    """Batches of indices into [0, num_examples): batch k holds positions
    [k*B, (k+1)*B) of the concatenation of per-epoch draws draw(seed, stream, e).

    An epoch's draw is a permutation (every example once), or, with ``example_weights``
    ([num_examples], positive), ``num_examples`` independent draws with replacement, example i
    with probability proportional to its weight (the reference's ``ClassAwareSampler``: a
    multinomial draw per epoch; its extra shuffle of iid draws changes nothing)."""
    if num_examples < 1:
        raise ValueError("Cannot draw batches from an empty set of examples.")
    stream_seed = _fold(_base_seed(seed), stream)
    if example_weights is not None:
        log_weights = tf.math.log(tf.constant(example_weights, tf.float64))[tf.newaxis]
        if log_weights.shape[1] != num_examples:
            raise ValueError(f"example_weights must hold {num_examples} weights; got {log_weights.shape[1]}.")

    def epoch_draw(epoch):
        if example_weights is not None:
            return tf.random.stateless_categorical(
                log_weights, num_examples, _fold(stream_seed, epoch), dtype=tf.int64)[0]
        return tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), _fold(stream_seed, epoch), alg=_ALG)

    start = int(start_step) * int(batch_size)
    first_epoch, offset = divmod(start, int(num_examples))
    first = tf.data.Dataset.from_tensors(tf.constant(first_epoch, tf.int64)).map(
        lambda epoch: epoch_draw(epoch)[offset:])
    rest = tf.data.Dataset.range(first_epoch + 1, _MAX_EPOCHS).map(epoch_draw)
    return first.concatenate(rest).unbatch().batch(batch_size, drop_remainder=True)


def augmentation_keys(seed, step, num_unlabeled_views=2):
    """The stateless augmentation seeds of training batch ``step``, [1 + max(2, n), 2]: row 0
    for the labeled weak view, row 1 + i for unlabeled view i. ``train_stream`` and on-device
    augmentation (``SemiSupervisedModel(augment_on_device=True)``) both use it, so both draw
    the same images for the same (seed, step)."""
    # At least 3 keys, so the default (weak, strong) layout keeps its seeds for any n.
    augment_seed = _fold(_base_seed(seed), _AUGMENT)
    return tf.random.split(_fold(augment_seed, step), 1 + max(2, int(num_unlabeled_views)), alg=_ALG)


def augment_batch(x_l, u, keys, unlabeled_views=("weak", "strong"), strong=augment.strong_augment,
                  output_size=None):
    """Augments one batch of raw uint8 images with ``augmentation_keys``: the weak labeled view
    and the unlabeled ``unlabeled_views`` (``VIEWS``; each resized to ``output_size`` if
    given). Returns ``(x_l, (view_0, ...))``."""
    keys = tf.unstack(keys)

    def finish(images):
        return images if output_size is None else resize_images(images, output_size)

    def view_of(view, key):
        if view == "identity":
            return u
        return augment.weak_augment(u, key) if view == "weak" else strong(u, key)

    x_l = finish(augment.weak_augment(x_l, keys[0]))
    views = tuple(finish(view_of(view, key)) for view, key in zip(unlabeled_views, keys[1:]))
    return x_l, views


def class_aware_weights(class_counts, beta):
    """Per-class sampling weights of the reference's ``ClassAwareSampler``.

    ``(1 - beta) / (1 - beta ** n_c)`` (the inverse "effective number" of class c's n_c
    images) for ``beta < 1``, ``1 / n_c`` for ``beta >= 1``. A sample of class c is drawn with
    probability proportional to its class's weight, so class c's share of the draws is
    proportional to ``n_c * weight_c``: exactly balanced for beta = 1, head-leaning below
    (beta = 0.999 on CIFAR-10-LT, N1 = 1500: about 1.9 : 1 head to tail).
    """
    counts = np.asarray(class_counts, dtype="float64")
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 1):
        raise ValueError(f"class_counts must be positive counts; got {list(class_counts)}.")
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be in [0, 1]; got {beta}.")
    if beta >= 1.0:
        return 1.0 / counts
    return (1.0 - beta) / (1.0 - np.power(beta, counts))


def _keras_cv_randaugment():
    import keras_cv

    # ops chosen per image; magnitude ~ the reference's mean level 5/10.
    return keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2,
                                       magnitude=0.5, magnitude_stddev=0.15, rate=0.5)


def _keras_randaugment():
    import keras

    return keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)


def make_strong_augment(augmentation="reference"):
    """Returns ``strong(images uint8 [B,H,W,3], seed [2]) -> uint8``: weak flip+crop, the
    chosen RandAugment, Cutout. "reference" is the FixMatch pool of docs/data.md section 3; the Keras
    alternatives exist for comparison only (their randomness is the layers' own, so
    they are not a pure function of the seed)."""
    if augmentation == "reference":
        return augment.strong_augment
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {augmentation!r}; expected one of "
                         f"{AUGMENTATIONS}.")
    if augmentation == "keras_cv":
        layer = _keras_cv_randaugment()

        def randaugment(images):
            return layer(images, training=True)
    else:
        layer = _keras_randaugment()

        def randaugment(images):
            # keras.layers.RandAugment picks ONE op set per call: call it per image.
            return tf.map_fn(lambda image: layer(image, training=True), images,
                             fn_output_signature=tf.float32)

    def strong(images, seed):
        weak_seed, cutout_seed = tf.unstack(tf.random.split(seed, 2, alg=_ALG))
        views = augment.weak_augment(images, weak_seed)
        views = tf.cast(tf.clip_by_value(tf.round(
            tf.cast(randaugment(views), tf.float32)), 0.0, 255.0), tf.uint8)
        views = tf.ensure_shape(views, images.shape)
        return augment.cutout(views, cutout_seed)

    return strong


def train_stream(lt_data, *, labeled_batch_size, unlabeled_ratio, seed,
                 augmentation="reference", augment_size=None, output_size=32, start_step=0,
                 with_unlabeled_labels=False, unlabeled_views=("weak", "strong"),
                 augment_on_device=False, class_aware_beta=None):
    """The infinite training stream ``((x_l, y_l), (u_w, u_s[, u_true]))``.

    ``unlabeled_views`` names the views of each unlabeled image, in order ("identity",
    "weak" or "strong", ``VIEWS``; a learner's ``unlabeled_views`` attribute, e.g.
    ("weak", "weak") for MeanTeacher / MixMatch, ("weak", "strong", "strong") for
    ReMixMatch, ("weak",) for PseudoLabel, ("identity", "weak", "strong") for USADTM); every
    augmented view draws its own augmentation, "identity" is the image only resized.

    Labeled batches are drawn without replacement, reshuffled every epoch (the reference's
    ``RandomSampler``), or, with ``class_aware_beta`` set, class-aware: with replacement,
    each image with probability proportional to ``class_aware_weights(labeled counts,
    class_aware_beta)`` of its class (the reference's ``ClassAwareSampler``; cRT).

    x_l: weakly augmented labeled images uint8 [B, S, S, 3], y_l int32 [B];
    u_w / u_s: weak / strong views of the same mu*B unlabeled images; u_true int32 (-1 where
    unknown, -2 for labeled images in the unlabeled set of ACR's split). Images are
    augmented at ``augment_size`` (default: their stored size; STL-10 96 px) and then resized
    to ``output_size`` (``image_resize.resize_images``: PIL's antialiased bilinear resize,
    the one the evaluation stream and serving use).

    ``augment_on_device=True``: the stream yields the raw images instead,
    ``((x_l, y_l), (u[, u_true]))`` uint8 (resized to ``augment_size`` if set), for a model
    built with ``augment_on_device=True`` that augments them inside its train step with the
    same keys (``augmentation_keys``), so the host only gathers and batches uint8.
    """
    if labeled_batch_size < 1 or unlabeled_ratio < 0:
        raise ValueError(f"labeled_batch_size must be >= 1 and unlabeled_ratio >= 0, got "
                         f"{labeled_batch_size} and {unlabeled_ratio}.")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    views = tuple(unlabeled_views)
    if not views or any(view not in VIEWS for view in views):
        raise ValueError(f"unlabeled_views must be a non-empty sequence of {'/'.join(VIEWS)}; "
                         f"got {unlabeled_views!r}.")
    strong = make_strong_augment(augmentation)
    unlabeled_batch_size = int(unlabeled_ratio * labeled_batch_size)
    labeled_images = tf.convert_to_tensor(lt_data.labeled_images)
    labeled_labels = tf.convert_to_tensor(lt_data.labeled_labels, tf.int32)
    unlabeled_images = tf.convert_to_tensor(lt_data.unlabeled_images)
    unlabeled_labels = tf.convert_to_tensor(lt_data.unlabeled_labels, tf.int32)

    def prepare(images):
        if augment_size is not None:
            images = resize_images(images, augment_size)
        return images

    def make_batch(step, labeled_index, unlabeled_index):
        x_l = prepare(tf.gather(labeled_images, labeled_index))
        y_l = tf.gather(labeled_labels, labeled_index)
        u = prepare(tf.gather(unlabeled_images, unlabeled_index))
        if augment_on_device:
            u_views = (u,)
        else:
            x_l, u_views = augment_batch(x_l, u, augmentation_keys(seed, step, len(views)), views,
                                         strong, output_size)
        if with_unlabeled_labels:
            return (x_l, y_l), u_views + (tf.gather(unlabeled_labels, unlabeled_index),)
        return (x_l, y_l), u_views

    steps = tf.data.Dataset.range(int(start_step), _MAX_EPOCHS)
    example_weights = None
    if class_aware_beta is not None:
        labels = np.asarray(lt_data.labeled_labels)
        counts = np.bincount(labels)
        present = counts > 0  # weights of absent classes are never used
        weights = np.zeros(len(counts))
        weights[present] = class_aware_weights(counts[present], class_aware_beta)
        example_weights = weights[labels]
    labeled = index_batches(len(lt_data.labeled_labels), labeled_batch_size, seed, start_step,
                            _LABELED, example_weights=example_weights)
    unlabeled = index_batches(len(lt_data.unlabeled_labels), unlabeled_batch_size, seed,
                              start_step, _UNLABELED)
    dataset = tf.data.Dataset.zip((steps, labeled, unlabeled))
    dataset = dataset.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_stream(images, labels, *, batch_size, output_size=32):
    """A finite stream of (uint8 images [b, S, S, 3], int32 labels) in order, no
    augmentation, resized to ``output_size`` if needed (``image_resize.resize_images``, as
    the exported serving signatures do); the last batch may be short."""
    images = tf.convert_to_tensor(images)
    labels = tf.convert_to_tensor(labels, tf.int32)
    count = int(images.shape[0])
    num_batches = -(-count // int(batch_size))

    def make_batch(index):
        start = index * batch_size
        end = tf.minimum(start + batch_size, count)
        return resize_images(images[start:end], output_size), labels[start:end]

    dataset = tf.data.Dataset.range(num_batches).map(
        make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
