"""Bounded, checked serving inputs: what the two signatures accept and how they refuse.

The expected pixels are built independently of the signature: lossless formats (PNG, BMP,
GIF with a palette) come from the arrays that were encoded; JPEG from TensorFlow's own
JPEG decoder. Oversized images are refused from their headers; the tests check that with
a JPEG whose header claims 40000 x 40000 (decoding it would need 4.8 GB) and a real
6000 x 6000 PNG.
"""

import io
import re
import struct
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from export_test_utils import CLASS_NAMES, IMAGE_SIZE, MODEL_NAME, keras_probabilities, pil_resize, random_images
from PIL import Image

from export import BYTES_SIGNATURE, SERVING_SIGNATURE, export_saved_model

SMALL_BUDGET = 40 * 40


def _encode(array, fmt, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _resized(array):
    rgb = array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=-1)
    return pil_resize(rgb[None, ..., :3])[0]


@pytest.fixture(scope="module")
def small_budget(network, tmp_path_factory):
    """The signatures of an export with max_image_pixels = 40 x 40."""
    path = export_saved_model(network, tmp_path_factory.mktemp("small_budget"), model_name=MODEL_NAME,
                              class_names=CLASS_NAMES, image_size=IMAGE_SIZE, max_image_pixels=SMALL_BUDGET)
    return tf.saved_model.load(path).signatures


def test_mixed_formats_sizes_and_channels_in_one_batch(network, signatures):
    rng = np.random.default_rng(7)
    rgb = [random_images(1, height=h, width=w, seed=s)[0] for h, w, s in ((20, 30, 1), (32, 32, 2), (45, 17, 3))]
    gray = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    rgba = np.concatenate([random_images(1, 28, 36, seed=4)[0], rng.integers(0, 256, (28, 36, 1), dtype=np.uint8)], -1)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [40, 80, 250]], np.uint8)
    palette = colours[rng.integers(0, 4, (10, 12))]
    jpeg = _encode(rgb[1], "JPEG")
    cases = [
        (_encode(rgb[0], "PNG"), rgb[0]),
        (jpeg, tf.io.decode_jpeg(jpeg, channels=3).numpy()),
        (_encode(rgb[2], "BMP"), rgb[2]),
        (_encode(gray, "PNG"), gray),                 # grayscale -> RGB
        (_encode(rgba, "PNG"), rgba),                 # RGBA -> RGB (alpha dropped)
        (_encode(palette, "GIF"), palette),           # 4 colours: lossless as a GIF
    ]
    outputs = signatures[BYTES_SIGNATURE](image_bytes=tf.constant([encoded for encoded, _ in cases]))
    expected = keras_probabilities(network, np.stack([_resized(pixels) for _, pixels in cases]))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_ids"].numpy(), expected.argmax(-1))


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _error(signature, elements):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        signature(image_bytes=tf.constant(elements))
    return " ".join(str(error.value).split())


@pytest.mark.parametrize("bad, message", [
    (b"", r"\[1 3\] \[are empty\]"),
    (b"this is not an image at all", r"\[1 3\] \[are not JPEG, PNG, GIF or BMP images\]"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", r"\[1 3\] \[have a truncated or corrupt header\]"),  # cut in the header
    (b"\xff\xd8\xff\xe0 garbage", r"\[1 3\] \[have a truncated or corrupt header\]"),
])
def test_bad_elements_are_named_by_index(signatures, bad, message):
    good = _encode(random_images(1, seed=1)[0], "PNG")
    assert re.search(message, _error(signatures[BYTES_SIGNATURE], [good, bad, good, bad]))


def test_truncated_and_corrupt_image_data_are_named_by_index(signatures):
    image = random_images(1, seed=2)[0]
    png, jpeg = _encode(image, "PNG"), _encode(image, "JPEG")
    corrupt = bytearray(png)
    idat = corrupt.index(b"IDAT")
    corrupt[idat + 20:idat + 40] = bytes(20)  # zeroed compressed data: the CRC no longer matches
    batch = [png, jpeg[:-30], jpeg, bytes(corrupt), png[:-30]]  # cut: the headers survive
    message = _error(signatures[BYTES_SIGNATURE], batch)
    assert "[1 3 4] [could not be decoded (truncated or corrupt image data)]" in message


def test_oversized_images_are_refused_from_their_header(signatures, small_budget):
    # A JPEG header claiming 40000 x 40000 pixels (its data is 32 x 32): refused by size,
    # so the decoder never allocates the 4.8 GB.
    jpeg = bytearray(_encode(random_images(1, seed=3)[0], "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 40000, 40000)
    # A real 6000 x 6000 PNG (36 M pixels, above the default 4096 x 4096).
    big_png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 6000, 6000, 8, 2, 0, 0, 0))
               + _png_chunk(b"IDAT", zlib.compress(bytes(6000 * (1 + 6000 * 3)), 9)) + _png_chunk(b"IEND", b""))
    good = _encode(random_images(1, seed=4)[0], "PNG")
    start = time.perf_counter()
    message = _error(signatures[BYTES_SIGNATURE], [good, bytes(jpeg), good, big_png])
    assert "[1 3] [have (height, width)] [[40000 40000][6000 6000]]" in message, message
    assert "outside 1..max_image_pixels=16777216 pixels" in message
    assert time.perf_counter() - start < 5  # decoding 36 M pixels alone takes longer here

    # A smaller budget applies to every format, at exactly height x width.
    at_limit, above = random_images(1, 40, 40, seed=5)[0], random_images(1, 41, 40, seed=6)[0]
    outputs = small_budget[BYTES_SIGNATURE](image_bytes=tf.constant([_encode(at_limit, "PNG")]))
    assert outputs["probabilities"].shape == (1, len(CLASS_NAMES))
    for fmt in ("PNG", "JPEG", "BMP", "GIF"):
        message = _error(small_budget[BYTES_SIGNATURE], [_encode(at_limit, fmt), _encode(above, fmt)])
        assert "[1] [have (height, width)] [[41 40]]" in message, fmt


def test_uint8_signature_applies_the_same_budget(small_budget):
    outputs = small_budget[SERVING_SIGNATURE](images=tf.constant(random_images(2, 40, 40)))
    assert outputs["probabilities"].shape == (2, len(CLASS_NAMES))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_image_pixels=1600 pixels"):
        small_budget[SERVING_SIGNATURE](images=tf.constant(random_images(1, 20, 81)))


def test_budget_must_be_positive(network, tmp_path):
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="max_image_pixels"):
            export_saved_model(network, tmp_path, model_name=MODEL_NAME, class_names=CLASS_NAMES,
                               max_image_pixels=bad)
    assert list(tmp_path.iterdir()) == []
