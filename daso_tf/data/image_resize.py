"""The one image resize of daso_tf: PIL's antialiased bilinear ``Image.resize``, in TensorFlow.

The reference resizes with ``torchvision.transforms.Resize`` on PIL images, i.e. Pillow's
``Image.resize(size, BILINEAR)``: a triangle filter stretched by the downscale factor
(antialiased, unlike ``tf.image.resize``), fixed-point coefficients, two separable passes
each rounded to uint8. ``resize_images`` replays Pillow's ``Resample.c`` operation by
operation (coefficients in float64 in Pillow's order, 22-bit fixed point, integer sums
exact in float64), so its output equals PIL's bit for bit (tested on random sizes, up and
down, square and not).

It is used everywhere an image changes size: the training stream (STL-10: augmented at
96 px, trained at 32), the evaluation stream, on-device augmentation and the exported
serving signatures, whose inputs may have any (run-time) height and width. So a served
image reaches the network exactly as the same image did during evaluation.
"""

import tensorflow as tf

PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2 (8-bit pixels, 2 overflow bits)
_ONE = float(1 << PRECISION_BITS)
_HALF = float(1 << (PRECISION_BITS - 1))


def _output_size(size):
    if isinstance(size, int):
        size = (size, size)
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"resize size must be positive, got {size!r}.")
    return height, width


def _coefficients(in_size, out_size):
    """Pillow's bilinear coefficients for ``in_size`` -> ``out_size`` pixels as a float64
    matrix ``[in_size, out_size]`` of 22-bit fixed-point integers (``precompute_coeffs`` +
    ``normalize_coeffs_8bpc``). ``in_size`` may be a run-time scalar tensor."""
    in_size = tf.cast(in_size, tf.int32)
    scale = tf.cast(in_size, tf.float64) / float(out_size)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # the triangle filter's support is 1, stretched by filterscale
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    centers = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    inverse = 1.0 / filterscale
    # Pillow truncates to int, then clamps at 0 / in_size: floor gives the same bounds.
    xmin = tf.maximum(tf.cast(tf.floor(centers - support + 0.5), tf.int32), 0)
    xmax = tf.minimum(tf.cast(tf.floor(centers + support + 0.5), tf.int32), in_size) - xmin
    offsets = tf.range(ksize)[None, :]
    valid = offsets < xmax[:, None]  # [out, ksize]
    position = offsets + xmin[:, None]
    distance = tf.abs((tf.cast(position, tf.float64) - centers[:, None] + 0.5) * inverse)
    taps = tf.where(valid & (distance < 1.0), 1.0 - distance, tf.zeros_like(distance))
    # Summed left to right like Pillow's loop (a tree reduction may differ in the last bit).
    total = tf.foldl(lambda acc, column: acc + column, tf.transpose(taps),
                     initializer=tf.zeros([out_size], tf.float64))
    normalized = tf.where(total[:, None] != 0.0, taps / total[:, None], taps)
    fixed = tf.floor(0.5 + normalized * _ONE)  # coefficients are >= 0: truncation == floor
    indices = tf.stack([tf.minimum(position, in_size - 1),
                        tf.broadcast_to(tf.range(out_size)[:, None], tf.shape(position))], axis=-1)
    # Padding slots carry 0, so clamped duplicate indices add nothing.
    return tf.scatter_nd(tf.reshape(indices, [-1, 2]), tf.reshape(fixed, [-1]),
                         tf.stack([in_size, out_size]))


def _resample(values, in_size, out_size, axis):
    """One Pillow pass along ``axis`` (1: rows, 2: columns) of float64 pixels, rounded and
    clipped to 0..255 like Pillow's ``clip8``."""
    coefficients = _coefficients(in_size, out_size)
    equation = "bhwc,ho->bowc" if axis == 1 else "bhwc,wo->bhoc"
    # Products and sums stay integers below 2^31: exact in float64 in any order.
    total = tf.einsum(equation, values, coefficients)
    return tf.clip_by_value(tf.floor((total + _HALF) / _ONE), 0.0, 255.0)


def _vertical_pass_first(in_height, in_width, out_height, out_width):
    """Pillow 13's pass order: vertical first when the height loses more than twice as
    many pixels as the width (measured against ``Image.resize`` on random sizes; older
    Pillow always starts with the horizontal pass, and both orders agree whenever a square
    image is resized to a square, as in training and evaluation)."""
    shrink_height = in_height - out_height
    shrink_width = in_width - out_width
    if isinstance(shrink_height, int) and isinstance(shrink_width, int):
        return max(shrink_height, 0) > 2 * max(shrink_width, 0)
    return tf.maximum(shrink_height, 0) > 2 * tf.maximum(shrink_width, 0)


def resize_images(images, size):
    """Resizes a uint8 batch ``[B, H, W, 3]`` to ``size`` (an int for square, or (height,
    width)) exactly as PIL's ``Image.resize((width, height), Image.BILINEAR)`` does.

    H and W may be unknown until run time (serving inputs). A pass whose size does not
    change is skipped when that is known statically (it is the identity in Pillow too).
    """
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise TypeError(f"images must be uint8 [B, H, W, 3], got dtype {images.dtype.name}.")
    if images.shape.rank != 4:
        raise ValueError(f"images must be a batch [B, H, W, 3], got shape {images.shape}.")
    out_height, out_width = _output_size(size)
    static_height, static_width = images.shape[1], images.shape[2]
    if (static_height, static_width) == (out_height, out_width):
        return images
    dynamic = tf.shape(images)
    in_height = static_height if static_height is not None else dynamic[1]
    in_width = static_width if static_width is not None else dynamic[2]
    values = tf.cast(images, tf.float64)

    def columns(pixels):
        if static_width == out_width:
            return pixels
        return _resample(pixels, in_width, out_width, axis=2)

    def rows(pixels):
        if static_height == out_height:
            return pixels
        return _resample(pixels, in_height, out_height, axis=1)

    vertical_first = _vertical_pass_first(in_height, in_width, out_height, out_width)
    if isinstance(vertical_first, bool):
        values = columns(rows(values)) if vertical_first else rows(columns(values))
    else:
        values = tf.cond(vertical_first, lambda: columns(rows(values)),
                         lambda: rows(columns(values)))
    resized = tf.cast(values, tf.uint8)
    return tf.ensure_shape(resized, [images.shape[0], out_height, out_width, images.shape[3]])
