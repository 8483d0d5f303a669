"""MixMatch-family building blocks: sharpening, MixUp, rotations (pure tensor functions).

Randomness is passed in explicitly (a ``keras.random.SeedGenerator`` owned by the model, or
drawn values), so runs are reproducible and the model's seed state is checkpointed.
"""

import keras
from keras import ops


def sharpen(probs, temperature):
    """Temperature sharpening ``p^(1/T) / sum_k p_k^(1/T)`` (MixMatch / ReMixMatch, T = 0.5)."""
    probs = ops.convert_to_tensor(probs)
    powered = ops.power(probs, ops.convert_to_tensor(1.0 / float(temperature), probs.dtype))
    return powered / ops.sum(powered, axis=-1, keepdims=True)


def mixup_lambda(alpha, seed, dtype="float32"):
    """``lam ~ Beta(alpha, alpha)``, then ``max(lam, 1 - lam)`` (the mix keeps its first input)."""
    lam = keras.random.beta((), alpha, alpha, seed=seed, dtype="float32")
    lam = ops.cast(lam, dtype)
    return ops.maximum(lam, 1.0 - lam)


def mixup(images, targets, lam, permutation):
    """MixUp of a batch with a permutation of itself.

    ``mixed_x = lam * x + (1 - lam) * x[perm]``, same for the soft targets. Images are
    mixed as pixels: normalisation is affine per channel and lam + (1 - lam) = 1, so this
    equals mixing normalised images as the reference does.
    """
    images = ops.convert_to_tensor(images)
    targets = ops.convert_to_tensor(targets)
    lam_x = ops.cast(lam, images.dtype)
    lam_y = ops.cast(lam, targets.dtype)
    mixed_images = lam_x * images + (1.0 - lam_x) * ops.take(images, permutation, axis=0)
    mixed_targets = lam_y * targets + (1.0 - lam_y) * ops.take(targets, permutation, axis=0)
    return mixed_images, mixed_targets


def random_permutation(size, seed):
    """A uniformly random permutation of ``range(size)`` (int32)."""
    return ops.cast(ops.argsort(keras.random.uniform((size,), seed=seed)), "int32")


def rotate_images(images, quarter_turns):
    """Rotate each image [B, H, W, C] (H == W) by ``quarter_turns[i] * 90`` degrees
    counter-clockwise (as ``torch.rot90(x, k, [1, 2])`` on CHW images)."""
    images = ops.convert_to_tensor(images)
    rotations = [images]
    for _ in range(3):
        rotations.append(ops.flip(ops.transpose(rotations[-1], (0, 2, 1, 3)), axis=1))
    stacked = ops.stack(rotations, axis=0)  # [4, B, H, W, C]
    one_hot = ops.one_hot(quarter_turns, 4, dtype=images.dtype)  # [B, 4]
    return ops.einsum("kbhwc,bk->bhwc", stacked, one_hot)


def soft_cross_entropy(logits, targets):
    """Mean over the batch of ``-sum_k targets_k log softmax(logits)_k``."""
    logits = ops.convert_to_tensor(logits)
    targets = ops.cast(ops.stop_gradient(targets), logits.dtype)
    return ops.mean(-ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1))
