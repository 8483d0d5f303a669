"""Weak / strong augmentation of uint8 image batches, vectorised, with per-sample randomness.

Every function takes a uint8 batch ``[B, H, W, 3]`` (static H, W) and an explicit stateless
seed tensor ``[2]``; each image draws its own flip, crop offset, RandAugment ops, levels
and Cutout box from that seed, so a batch is a pure function of (images, seed). Only
TensorFlow ops with XLA kernels are used (gather, segment sums, elementwise maths,
stateless Philox random numbers), so the same code runs inside ``tf.data.Dataset.map`` and
inside ``tf.function(jit_compile=True)`` on an accelerator.

The RandAugment op pool, magnitudes and Cutout are the FixMatch pool of the reference
(docs/data.md section 3), each op reproducing PIL's integer/float arithmetic:

- LUT ops (AutoContrast, Equalize, Posterize, Solarize) build a per-sample, per-channel
  256-entry lookup table (PIL's ``ImageOps`` formulas) and apply it with one gather;
- enhance ops (Brightness, Color, Contrast, Sharpness) are PIL's ``Image.blend(degenerate,
  image, factor)``: ``trunc(deg + factor * (img - deg))`` in float32 (Brightness and
  Contrast, whose degenerate is constant, as LUTs), with PIL's degenerate
  images (black; ITU-R 601 luma ``L`` as RGB; the rounded mean of ``L``; the SMOOTH 3x3
  filter with the border left unchanged);
- geometric ops (Rotate, ShearX/Y, TranslateX/Y) are PIL's ``Image.transform`` AFFINE with
  NEAREST resampling, replayed in PIL's 16.16 fixed-point arithmetic, black fill.

One RandAugment layer selects one op per image; the three families are applied in turn,
each to the images that selected it (or, for XLA's static shapes, to the whole batch with
every non-selected family reduced to the identity), so a layer costs at most one of each
instead of all fourteen.
"""

import math

import numpy as np
import tensorflow as tf

OPS = ("AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize",
       "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY")
_OP = {name: index for index, name in enumerate(OPS)}
_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
_ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")

MAGNITUDE = 10  # levels are drawn uniformly from 1..MAGNITUDE-1, as np.random.randint(1, 10)
CUTOUT_SIZE = 16
CUTOUT_FILL = 127
PAD = 4
_RNG_ALG = "philox"  # pinned so CPU, GPU and XLA draw the same numbers
_FIX_ONE = 65536  # PIL's 16.16 fixed point

# Per-level parameters, computed with the reference's Python float expressions.
_LEVELS = range(MAGNITUDE)
ENHANCE_FACTORS = np.array([level / MAGNITUDE * 0.9 + 0.05 for level in _LEVELS], np.float32)
POSTERIZE_BITS = np.array([int(level / MAGNITUDE * 4) + 4 for level in _LEVELS], np.int32)
SOLARIZE_THRESHOLDS = np.array([256 - int(level / MAGNITUDE * 256) for level in _LEVELS],
                               np.int32)
ROTATE_DEGREES = [int(level / MAGNITUDE * 30) for level in _LEVELS]
SHEAR_FACTORS = [level / MAGNITUDE * 0.3 for level in _LEVELS]
TRANSLATE_FRACTIONS = [level / MAGNITUDE * 0.3 for level in _LEVELS]


def _split(seed, num):
    return tf.unstack(tf.random.split(seed, num=num, alg=_RNG_ALG))


def _uniform_int(shape, seed, minval, maxval):
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=tf.int32, alg=_RNG_ALG)


def _uniform(shape, seed, minval=0.0, maxval=1.0):
    # Built from 24 random integer bits: XLA's float conversion of the Philox bits differs
    # from the CPU kernel's, its integer draws do not.
    bits = _uniform_int(shape, seed, 0, 1 << 24)
    return minval + (maxval - minval) * (tf.cast(bits, tf.float32) / float(1 << 24))


def _check_images(images):
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise TypeError(f"images must be uint8 [B, H, W, 3], got dtype {images.dtype.name}.")
    if images.shape.rank != 4 or images.shape[-1] != 3 or None in images.shape[1:3]:
        raise ValueError(
            f"images must be a uint8 batch [B, H, W, 3] with static H and W, got shape "
            f"{images.shape}.")
    return images


# ---------------------------------------------------------------------------------------
# Weak augmentation and Cutout
# ---------------------------------------------------------------------------------------

def weak_augment(images, seed, pad=PAD):
    """Horizontal flip (p=0.5), then a random crop of the original size after ``pad``-pixel
    REFLECT padding; flip, crop row and crop column drawn per image."""
    images = _check_images(images)
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    flip_seed, row_seed, col_seed = _split(seed, 3)
    flip = _uniform([batch], flip_seed) < 0.5
    top = _uniform_int([batch], row_seed, 0, 2 * pad + 1)
    left = _uniform_int([batch], col_seed, 0, 2 * pad + 1)
    # Crop coordinates in the padded frame, mapped back through the reflection (one gather
    # from the unpadded images). Reflect padding is symmetric, so flip-then-pad equals
    # pad-then-flip: a flipped crop reads the padded columns right to left.
    rows = top[:, None] + tf.range(height)[None, :]
    cols = left[:, None] + tf.range(width)[None, :]
    cols = tf.where(flip[:, None], width + 2 * pad - 1 - cols, cols)
    rows = _reflect(rows - pad, height)
    cols = _reflect(cols - pad, width)
    flat_index = ((tf.range(batch)[:, None] * height + rows) * width)[:, :, None] + cols[:, None, :]
    return tf.gather(tf.reshape(images, [-1, 3]), flat_index)


def _reflect(index, size):
    """numpy/TF "REFLECT" padding coordinates (edge not repeated) for |overshoot| < size."""
    index = tf.abs(index)
    return tf.where(index > size - 1, 2 * (size - 1) - index, index)


def cutout(images, seed, size=CUTOUT_SIZE, fill=CUTOUT_FILL):
    """The reference's CutoutAbs: centre (x, y) uniform over the image, box
    ``x0 = int(max(0, x - size/2))``, ``x1 = int(min(W, x0 + size))`` (same for y), painted
    with PIL's inclusive rectangle bounds (up to (size+1)^2 pixels), gray ``fill``."""
    images = _check_images(images)
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    x_seed, y_seed = _split(seed, 2)
    center_x = _uniform([batch], x_seed, 0.0, float(width))
    center_y = _uniform([batch], y_seed, 0.0, float(height))
    x0 = tf.floor(tf.maximum(0.0, center_x - size / 2.0))
    y0 = tf.floor(tf.maximum(0.0, center_y - size / 2.0))
    x1 = tf.minimum(float(width), x0 + size)
    y1 = tf.minimum(float(height), y0 + size)
    xs = tf.range(width, dtype=tf.float32)[None, None, :]
    ys = tf.range(height, dtype=tf.float32)[None, :, None]
    inside = ((xs >= x0[:, None, None]) & (xs <= x1[:, None, None])
              & (ys >= y0[:, None, None]) & (ys <= y1[:, None, None]))
    return tf.where(inside[..., None], tf.constant(fill, tf.uint8), images)


# ---------------------------------------------------------------------------------------
# RandAugment op families
# ---------------------------------------------------------------------------------------

def _histograms(images):
    """Per-sample, per-channel 256-bin histograms [B, 3, 256] (int32)."""
    batch = tf.shape(images)[0]
    values = tf.cast(images, tf.int32)
    offsets = (tf.range(batch)[:, None, None, None] * 3 + tf.range(3)) * 256
    return tf.reshape(
        tf.math.unsorted_segment_sum(tf.ones_like(values), values + offsets, batch * 3 * 256),
        [batch, 3, 256])


# ix * (255.0 / spread) in double precision, as ImageOps.autocontrast computes it [256, 256].
_AUTOCONTRAST_PRODUCTS = np.arange(256, dtype=np.float64)[None, :] * (
    255.0 / np.maximum(np.arange(256, dtype=np.float64), 1.0))[:, None]


def _luts(images, ops, levels, luma_mean):
    """Per-sample, per-channel lookup tables [B, 3, 256] (int32) of the ops that map each
    pixel value independently of its position; identity for every other op.

    Brightness and Contrast are LUTs too: their degenerate image is constant per sample
    (0, resp. the rounded mean of L), so PIL's blend depends on the pixel value only.
    """
    num_pixels = images.shape[1] * images.shape[2]
    hist = _histograms(images)
    present = hist > 0
    index = tf.range(256)
    identity = tf.broadcast_to(index, tf.shape(hist))

    # AutoContrast (cutoff 0): lo/hi = first/last occupied bin; int(ix*scale + offset) in
    # double precision, as PIL computes it, clipped to [0, 255].
    lo = tf.argmax(tf.cast(present, tf.int32), axis=-1, output_type=tf.int32)
    hi = 255 - tf.argmax(tf.cast(present[..., ::-1], tf.int32), axis=-1, output_type=tf.int32)
    # The products come from a table so that no compiler fuses them into an FMA.
    spread = tf.maximum(hi - lo, 1)[..., None]
    products = tf.reshape(_AUTOCONTRAST_PRODUCTS, [-1])
    scaled = tf.gather(products, spread * 256 + index)
    offset = -tf.gather(products, spread * 256 + lo[..., None])
    stretched = tf.cast(tf.clip_by_value(tf.math.floor(scaled + offset), 0.0, 255.0), tf.int32)
    autocontrast = tf.where((hi > lo)[..., None], stretched, identity)

    # Equalize: step = (count - count of the last occupied bin) // 255;
    # lut[i] = (step // 2 + pixels below i) // step, identity when step == 0.
    last_count = tf.gather(hist, hi, axis=2, batch_dims=2)
    step = (num_pixels - last_count) // 255
    below = tf.cumsum(hist, axis=-1, exclusive=True)
    equalized = (step[..., None] // 2 + below) // tf.maximum(step, 1)[..., None]
    equalize = tf.where((step > 0)[..., None], tf.minimum(equalized, 255), identity)

    bits = tf.gather(POSTERIZE_BITS, levels)
    keep_mask = 255 - (tf.bitwise.left_shift(1, 8 - bits) - 1)
    posterize = tf.bitwise.bitwise_and(identity, keep_mask[:, None, None])

    threshold = tf.gather(SOLARIZE_THRESHOLDS, levels)[:, None, None]
    solarize = tf.where(identity < threshold, identity, 255 - identity)

    # Enhance blends against a constant degenerate (PIL truncates deg + f*(v - deg) in
    # float32 for 0 <= f <= 1).
    value = tf.cast(identity, tf.float32)
    brightness = tf.cast(_blend(tf.zeros_like(value), value, levels), tf.int32)
    mean = tf.cast(luma_mean, tf.float32)[:, None, None]
    contrast = tf.cast(_blend(mean, value, levels), tf.int32)

    lut = identity
    for name, table in (("AutoContrast", autocontrast), ("Equalize", equalize),
                        ("Posterize", posterize), ("Solarize", solarize),
                        ("Brightness", brightness), ("Contrast", contrast)):
        lut = tf.where((ops == _OP[name])[:, None, None], table, lut)
    return lut


# float32(factor * d) for every level and integer difference d in [-255, 255], rounded as
# PIL's C float code rounds it. Looking the product up keeps a compiler (XLA) from fusing
# the multiply-add of the blend into an FMA, which would round differently.
_BLEND_PRODUCTS = (ENHANCE_FACTORS[:, None]
                   * np.arange(-255, 256, dtype=np.float32)[None, :]).astype(np.float32)


def _blend(degenerate, values, levels):
    """PIL's Image.blend(degenerate, image, factor) for 0 <= factor <= 1 on float32 pixel
    values: trunc(deg + float32(factor * (img - deg)))."""
    shape = [-1] + [1] * (len(values.shape) - 1)
    index = (tf.reshape(levels, shape) * 511 + 255
             + tf.cast(values - degenerate, tf.int32))
    product = tf.gather(tf.reshape(_BLEND_PRODUCTS, [-1]), index)
    return tf.floor(degenerate + product)


def _apply_luts(images, luts):
    batch = tf.shape(images)[0]
    offsets = (tf.range(batch)[:, None, None, None] * 3 + tf.range(3)) * 256
    flat = tf.gather(tf.reshape(luts, [-1]), tf.cast(images, tf.int32) + offsets)
    return tf.cast(flat, tf.uint8)


def _luma(values):
    """PIL's RGB -> L conversion, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, on float32
    pixel values (every partial sum stays below 2^24, so it is exact)."""
    weighted = tf.tensordot(values, tf.constant([19595.0, 38470.0, 7471.0]), axes=1)
    return tf.floor((weighted + 32768.0) / 65536.0)


def _luma_mean(luma):
    """int(mean(L) + 0.5), as ImageEnhance.Contrast computes it (exact integer maths)."""
    num_pixels = luma.shape[1] * luma.shape[2]
    total = tf.cast(tf.reduce_sum(luma, axis=[1, 2]), tf.int32)
    return (2 * total + num_pixels) // (2 * num_pixels)


def _smooth(values):
    """PIL's ImageFilter.SMOOTH (3x3 kernel 1,1,1/1,5,1/1,1,1, divisor 13, rounded) with
    the border pixels left unchanged, on float32 pixel values (exact integers)."""
    height, width = values.shape[1], values.shape[2]
    rows = values[:, :, :-2] + values[:, :, 1:-1] + values[:, :, 2:]
    total = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:] + 4.0 * values[:, 1:-1, 1:-1]
    # round(total / 13): total / 13 is never within 1/26 of a half-integer.
    smoothed = tf.floor((total + 6.5) / 13.0)
    interior = tf.pad(smoothed, [[0, 0], [1, 1], [1, 1], [0, 0]])
    border = np.ones([1, height, width, 1], bool)
    border[:, 1:-1, 1:-1] = False
    return tf.where(border, values, interior)


def _enhance(values, luma, ops, levels):
    """Color and Sharpness: PIL's blend(degenerate, image, factor) against a per-pixel
    degenerate (L as RGB, resp. the SMOOTH-filtered image); identity for other ops."""
    is_color = (ops == _OP["Color"])[:, None, None, None]
    degenerate = tf.where(is_color, luma[..., None], _smooth(values))
    blended = _blend(degenerate, values, levels)
    is_enhance = is_color | (ops == _OP["Sharpness"])[:, None, None, None]
    return tf.where(is_enhance, blended, values)


def _fixed_point(matrix):
    """PIL's affine_fixed coefficients for the inverse map (a, b, c, d, e, f):
    x_in = (a2 + x*a0 + y*a1) >> 16, y_in = (a5 + x*a3 + y*a4) >> 16."""
    a, b, c, d, e, f = matrix

    def fix(value):
        return math.floor(value * 65536.0 + 0.5)

    return [fix(a), fix(b), fix(c + a * 0.5 + b * 0.5), fix(d), fix(e), fix(f + d * 0.5 + e * 0.5)]


def _rotation_matrix(degrees, width, height):
    """Image.rotate(degrees)'s inverse affine matrix (Pillow's rounding and centre)."""
    angle = -math.radians(degrees)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    cx, cy = width / 2, height / 2
    c = a * -cx + b * -cy + 0.0 + cx
    f = d * -cx + e * -cy + 0.0 + cy
    return (a, b, c, d, e, f)


def _geometric_table(height, width):
    """Fixed-point coefficients [5 ops, MAGNITUDE levels, 2 signs (+, -), 6] for
    Rotate, ShearX, ShearY, TranslateX, TranslateY at this image size."""
    table = np.zeros([len(_GEOMETRIC), MAGNITUDE, 2, 6], np.int64)
    for level in range(MAGNITUDE):
        for sign_index, sign in enumerate((1, -1)):
            shear = sign * SHEAR_FACTORS[level]
            dx = int(sign * TRANSLATE_FRACTIONS[level] * width)
            dy = int(sign * TRANSLATE_FRACTIONS[level] * height)
            matrices = (_rotation_matrix(sign * ROTATE_DEGREES[level], width, height),
                        (1, shear, 0, 0, 1, 0), (1, 0, 0, shear, 1, 0),
                        (1, 0, dx, 0, 1, 0), (1, 0, 0, 0, 1, dy))
            for op_index, matrix in enumerate(matrices):
                table[op_index, level, sign_index] = _fixed_point(matrix)
    return table


def _geometric(images, ops, levels, negative):
    """PIL Image.transform AFFINE / NEAREST / black fill, per image; identity elsewhere."""
    height, width = images.shape[1], images.shape[2]
    batch = tf.shape(images)[0]
    table = tf.constant(_geometric_table(height, width), tf.int32)
    kind = tf.zeros_like(ops)
    is_geometric = tf.zeros_like(ops, tf.bool)
    for kind_index, name in enumerate(_GEOMETRIC):
        kind = tf.where(ops == _OP[name], kind_index, kind)
        is_geometric |= ops == _OP[name]
    coefficients = tf.gather_nd(table, tf.stack([kind, levels, tf.cast(negative, tf.int32)], 1))
    identity = tf.constant(_fixed_point((1, 0, 0, 0, 1, 0)), tf.int32)
    coefficients = tf.where(is_geometric[:, None], coefficients, identity)
    a0, a1, a2, a3, a4, a5 = [coefficients[:, i, None, None] for i in range(6)]
    xs = tf.range(width)[None, None, :]
    ys = tf.range(height)[None, :, None]
    x_in = tf.bitwise.right_shift(a2 + xs * a0 + ys * a1, 16)
    y_in = tf.bitwise.right_shift(a5 + xs * a3 + ys * a4, 16)
    valid = (x_in >= 0) & (x_in < width) & (y_in >= 0) & (y_in < height)
    flat_index = (tf.range(batch)[:, None, None] * height
                  + tf.clip_by_value(y_in, 0, height - 1)) * width + tf.clip_by_value(
                      x_in, 0, width - 1)
    pixels = tf.gather(tf.reshape(images, [-1, 3]), flat_index)
    return tf.where(valid[..., None], pixels, tf.zeros_like(pixels))


def _lut_family(images, ops, levels, negative):
    luma_mean = _luma_mean(_luma(tf.cast(images, tf.float32)))
    return _apply_luts(images, _luts(images, ops, levels, luma_mean))


def _enhance_family(images, ops, levels, negative):
    values = tf.cast(images, tf.float32)
    return tf.cast(_enhance(values, _luma(values), ops, levels), tf.uint8)


_FAMILIES = (
    (_lut_family, ("AutoContrast", "Brightness", "Contrast", "Equalize", "Posterize",
                   "Solarize")),
    (_enhance_family, ("Color", "Sharpness")),
    (_geometric, _GEOMETRIC),
)


def apply_ops(images, ops, levels, negative=None, static_shapes=False):
    """Applies one pool op per image: ``ops[i]`` (index into OPS) at integer ``levels[i]``
    (1..9), with the sign of the geometric ops negative where ``negative[i]``.

    With ``static_shapes=False`` each op family runs only on the images that selected it
    (gather / scatter of a data-dependent subset: several times faster on a CPU, e.g. in
    tf.data); ``static_shapes=True`` runs every family on the whole batch with the others
    reduced to the identity, which XLA (``jit_compile=True``) needs. Both give the same
    images.
    """
    images = _check_images(images)
    ops = tf.cast(ops, tf.int32)
    levels = tf.cast(levels, tf.int32)
    negative = tf.zeros_like(ops, tf.bool) if negative is None else tf.cast(negative, tf.bool)
    for family, names in _FAMILIES:
        if static_shapes:
            images = family(images, ops, levels, negative)
            continue
        selected = tf.reduce_any(tf.stack([ops == _OP[name] for name in names]), axis=0)
        index = tf.where(selected)
        subset = tf.gather_nd(images, index)
        changed = family(subset, tf.gather_nd(ops, index), tf.gather_nd(levels, index),
                         tf.gather_nd(negative, index))
        images = tf.tensor_scatter_nd_update(images, index, changed)
    return images


def randaugment(images, seed, num_ops=2, prob=0.5, magnitude=MAGNITUDE, static_shapes=False):
    """The reference RandAugment without Cutout: ``num_ops`` ops drawn per image WITH
    replacement from the 14-op FixMatch pool, each applied with probability ``prob`` at an
    integer level uniform in 1..magnitude-1 (random sign for geometric ops).
    ``static_shapes``: see :func:`apply_ops` (True inside ``jit_compile=True``)."""
    images = _check_images(images)
    if not 1 < magnitude <= MAGNITUDE:
        raise ValueError(f"magnitude must be in 2..{MAGNITUDE}, got {magnitude}.")
    batch = tf.shape(images)[0]
    for layer_seed in _split(seed, num_ops):
        op_seed, apply_seed, level_seed, sign_seed = _split(layer_seed, 4)
        ops = _uniform_int([batch], op_seed, 0, len(OPS))
        applied = _uniform([batch], apply_seed) < prob
        ops = tf.where(applied, ops, _OP["Identity"])
        levels = _uniform_int([batch], level_seed, 1, magnitude)
        negative = _uniform([batch], sign_seed) < 0.5
        images = apply_ops(images, ops, levels, negative, static_shapes=static_shapes)
    return images


def strong_augment(images, seed, pad=PAD, cutout_size=CUTOUT_SIZE, static_shapes=False):
    """The unlabeled strong view: weak flip+crop, RandAugment (2 ops, p=0.5), Cutout.
    ``static_shapes``: see :func:`apply_ops` (True inside ``jit_compile=True``)."""
    weak_seed, ra_seed, cutout_seed = _split(seed, 3)
    images = weak_augment(images, weak_seed, pad=pad)
    images = randaugment(images, ra_seed, static_shapes=static_shapes)
    return cutout(images, cutout_seed, size=cutout_size)
