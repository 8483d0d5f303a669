"""Export a trained classifier as a TF Serving SavedModel with preprocessing inside.

Layout written (what TF Serving scans for)::

    <export_dir>/models.config                      model server config listing every model
    <export_dir>/<model_name>/<version>/saved_model.pb
                                       /variables/...
                                       /assets.extra/tf_serving_warmup_requests
                                       /assets.extra/daso_tf.json  (classes, provenance)

Signatures:
    serving_default       images uint8 [None, None, None, 3] (any H, W)
    predict_images_bytes  image_bytes string [None] (encoded JPEG / PNG / GIF / BMP)
  both returning probabilities float32 [None, K], class_ids int64 [None],
  class_names string [None].

Images of any size are resized to the training resolution inside the graph with
``daso_tf.data.image_resize.resize_images``, the resize the evaluation pipeline uses (PIL's
antialiased bilinear resize, exact to the pixel, rounded to uint8): a 96 px STL-10 image is
served exactly as it was evaluated. At the training size it is the identity, so such inputs
reach the network unchanged.

Both signatures refuse images of more than ``max_image_pixels`` pixels (height x width;
default 4096 x 4096). Encoded images are checked from their headers (JPEG: its SOF segment;
PNG: IHDR; GIF: the logical screen; BMP: the info header) BEFORE anything is decoded, so a
huge image costs no memory. A request with an empty, non-image, truncated, corrupt or
oversized element fails as a whole with an InvalidArgumentError that lists the indices of
the failing elements (and their sizes when too large); grayscale and RGBA images are
converted to RGB.

The version directory is written into a hidden temporary sibling, fsync'ed and renamed
into place (``daso_tf.io_utils``); models.config is rewritten atomically.
"""

import os
import pathlib
import shutil

import keras
import numpy as np
import tensorflow as tf

from daso_tf import io_utils
from daso_tf.fault_injection import kill_point
from daso_tf._validation import SERVING_MODEL_NAME
from daso_tf.data.image_resize import resize_images

SERVING_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "predict_images_bytes"
IMAGES_INPUT = "images"
# TF Serving / Cloud AI conventions treat inputs whose alias ends in "_bytes" as binary.
BYTES_INPUT = "image_bytes"
OUTPUT_KEYS = ("probabilities", "class_ids", "class_names")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# What produced the export (daso_tf version, git commit, TF/Keras) and what it serves.
METADATA_FILE = os.path.join("assets.extra", "daso_tf.json")
MODELS_CONFIG_FILE = "models.config"
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096



def export_saved_model(
    model_or_network,
    export_dir,
    *,
    model_name,
    version=None,
    class_names,
    image_size=(32, 32),
    overwrite=False,
    max_image_pixels=None,
):
    """Write `<export_dir>/<model_name>/<version>/` as a TF Serving SavedModel.

    Args:
        model_or_network: a Keras model mapping pixel images (float, 0..255, [B, H, W, 3]
            at `image_size`) to logits [B, K] with normalisation inside, or any object with
            an `ema_network` attribute holding one (a daso_tf algorithm model).
        export_dir: the model base directory; created if missing.
        model_name: the TF Serving model name and the sub-directory holding its versions.
        version: positive integer; None picks one more than the largest existing version
            (1 when there is none).
        class_names: K strings, in class-id order.
        image_size: (height, width) the network was trained at.
        overwrite: replace an existing version directory instead of refusing.
        max_image_pixels: the largest image (height x width) the signatures accept; None:
            ``DEFAULT_MAX_IMAGE_PIXELS`` (4096 x 4096).

    Returns:
        The path of the version directory (str).

    The version directory appears atomically: everything is written into a temporary
    sibling first, fsync'ed and renamed into place, so a failure (or a kill) leaves no
    partial version behind.
    Outputs are float32 whatever the network's dtype policy (float32, float64 or mixed);
    the network's variables are saved in their own dtype.
    """
    network = _resolve_network(model_or_network)
    model_name = _check_model_name(model_name)
    image_size = _check_image_size(image_size)
    class_names = _check_class_names(class_names)
    version = None if version is None else _check_version(version)
    max_image_pixels = _check_max_image_pixels(max_image_pixels)
    export_dir = _check_export_dir(export_dir)
    model_dir = export_dir / model_name
    if model_dir.exists() and not model_dir.is_dir():
        raise ValueError(f"model directory {model_dir} exists and is not a directory.")
    version = next_version(model_dir) if version is None else version
    version_dir = model_dir / str(version)
    if version_dir.exists() and not overwrite:
        raise FileExistsError(
            f"version directory {version_dir} already exists; pass overwrite=True to replace "
            "it or version=None for the next free version."
        )
    _build_and_check_classes(network, image_size, len(class_names))

    # Only now, with every argument checked, create directories.
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"export_dir {export_dir} cannot be created: {error}") from None
    io_utils.remove_stale_temporaries(model_dir)  # left by exports that were killed
    temp_dir = pathlib.Path(io_utils.temp_sibling(version_dir, "export"))
    try:
        _write_saved_model(network, temp_dir, class_names=class_names, image_size=image_size,
                           max_image_pixels=max_image_pixels)
        _write_warmup_requests(temp_dir, model_name=model_name, image_size=image_size)
        _write_metadata(temp_dir, model_name=model_name, version=version, class_names=class_names,
                        image_size=image_size)
        write_models_config(export_dir, model_name)
        io_utils.sync_tree(temp_dir)
        kill_point("export:before_rename")
        if version_dir.exists() and not overwrite:  # appeared while we were writing
            raise FileExistsError(f"version directory {version_dir} already exists.")
        io_utils.move_into_place(temp_dir, version_dir, replace=overwrite)
    except BaseException as error:
        shutil.rmtree(temp_dir, ignore_errors=True)
        if io_utils.is_disk_full(error):
            raise io_utils.disk_full_error(error, version_dir) from None
        raise
    return str(version_dir)


def next_version(model_dir):
    """One more than the largest integer-named sub-directory of `model_dir` (1 if none)."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def write_models_config(export_dir, model_name, *, base_path_prefix="/models"):
    """Add (or keep) `model_name` in `<export_dir>/models.config` for `--model_config_file`.

    The base path is where the model directory appears inside the serving container, i.e.
    `<base_path_prefix>/<model_name>` when `export_dir` is mounted at `base_path_prefix`.
    Other models already listed are kept. Returns the config path.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = pathlib.Path(export_dir) / MODELS_CONFIG_FILE
    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise ValueError(f"{path} is not a valid ModelServerConfig text proto: {error}") from None
    entries = config.model_config_list.config
    base_path = f"{base_path_prefix.rstrip('/')}/{model_name}"
    entry = next((c for c in entries if c.name == model_name), None)
    if entry is None:
        entry = entries.add()
        entry.name = model_name
    entry.base_path = base_path
    entry.model_platform = "tensorflow"
    io_utils.write_atomic(path, text_format.MessageToString(config))
    return str(path)


def _resolve_network(model_or_network):
    network = getattr(model_or_network, "ema_network", model_or_network)
    if not isinstance(network, keras.layers.Layer):
        raise TypeError(
            "model_or_network must be a Keras model (pixels -> logits) or an object with an "
            f"`ema_network` attribute holding one; got {type(model_or_network).__name__}."
        )
    return network


def _check_model_name(model_name):
    if not isinstance(model_name, str) or not SERVING_MODEL_NAME.match(model_name):
        raise ValueError(
            f"model_name must be a non-empty name of letters, digits, '_', '.', '-' (no path "
            f"separators, not starting with '.'); got {model_name!r}."
        )
    return model_name


def _check_image_size(image_size):
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width); got {image_size!r}.") from None
    if height < 1 or width < 1 or (height, width) != tuple(image_size):
        raise ValueError(f"image_size must be two positive integers; got {image_size!r}.")
    return height, width


def _check_class_names(class_names):
    if isinstance(class_names, (str, bytes)) or class_names is None:
        raise ValueError(f"class_names must be a list of strings; got {class_names!r}.")
    class_names = list(class_names)
    if not class_names or not all(isinstance(n, str) and n for n in class_names):
        raise ValueError(f"class_names must be a list of non-empty strings; got {class_names!r}.")
    return class_names


def _check_export_dir(export_dir):
    if export_dir is None or not str(export_dir).strip():
        raise ValueError(f"export_dir must be a directory path; got {export_dir!r}.")
    export_dir = pathlib.Path(export_dir)
    if export_dir.exists() and not export_dir.is_dir():
        raise ValueError(f"export_dir {export_dir} exists and is not a directory.")
    existing = next(p for p in (export_dir.absolute(), *export_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"export_dir {export_dir} cannot be created: {existing} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"export_dir {export_dir} is not writable ({existing}).")
    return export_dir


def _check_version(version):
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"version must be a positive integer or None; got {version!r}.")
    return int(version)


def _check_max_image_pixels(max_image_pixels):
    if max_image_pixels is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, (int, np.integer)) \
            or max_image_pixels < 1:
        raise ValueError(f"max_image_pixels must be a positive integer; got {max_image_pixels!r}.")
    return int(max_image_pixels)


def _network_input_dtype(network):
    # Pixels are fed in the network's variable dtype (float32 / float64), the dtype its
    # preprocessing casts them to anyway.
    return tf.as_dtype(network.dtype_policy.variable_dtype)


def _build_and_check_classes(network, image_size, num_class_names):
    pixels = tf.zeros((1, *image_size, 3), _network_input_dtype(network))
    logits = network(pixels, training=False)
    if len(logits.shape) != 2 or logits.shape[-1] != num_class_names:
        raise ValueError(
            f"the network maps [1, {image_size[0]}, {image_size[1]}, 3] images to logits of "
            f"shape {tuple(logits.shape)}, which does not match {num_class_names} class_names."
        )


def _prediction_outputs(network, pixels, class_names_table):
    """uint8 pixels at the training size -> the three serving outputs."""
    logits = network(tf.cast(pixels, _network_input_dtype(network)), training=False)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    return {
        "probabilities": probabilities,
        "class_ids": class_ids,
        "class_names": tf.gather(class_names_table, class_ids),
    }


def _checked_images(images, max_image_pixels):
    # A loaded signature checks the dtype it is fed but not the shape, and static checks
    # (tf.ensure_shape) pass at trace time: check the channels at run time. A wrong rank
    # is rejected by the resize's einsum ("Expected input 0 to have rank 4").
    shape = tf.shape(images, out_type=tf.int64)
    message = f"{IMAGES_INPUT} must be uint8 [N, H, W, 3] (RGB); wrong number of channels"
    too_large = (f"{IMAGES_INPUT}: images of more than max_image_pixels={max_image_pixels} pixels "
                 "(height x width) are refused")
    checks = [tf.debugging.assert_equal(shape[-1], tf.constant(3, tf.int64), message=message),
              tf.debugging.assert_less_equal(shape[1] * shape[2], tf.constant(max_image_pixels, tf.int64),
                                             message=too_large)]
    with tf.control_dependencies(checks):
        return tf.identity(images)


# ----------------------------------------------------------------------------- encoded images

_UNKNOWN, _JPEG, _PNG, _GIF, _BMP = range(5)
_FAILURES_SHOWN = 16  # failing element indices listed in an error message


def _image_formats(image_bytes):
    """Per element: _JPEG, _PNG, _GIF, _BMP from the leading magic bytes, else _UNKNOWN."""
    def starts_with(magic):
        return tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), magic)

    formats = tf.zeros_like(image_bytes, dtype=tf.int32)
    for code, magics in ((_BMP, [b"BM"]), (_GIF, [b"GIF87a", b"GIF89a"]), (_PNG, [b"\x89PNG\r\n\x1a\n"]),
                         (_JPEG, [b"\xff\xd8\xff"])):
        matches = tf.reduce_any(tf.stack([starts_with(m) for m in magics]), axis=0)
        formats = tf.where(matches, code, formats)
    return formats


def _header_size(encoded, image_format):
    """[height, width] int64 from the header of one encoded image; raises if unreadable."""
    def unsigned(offset, length, little_endian):
        raw = tf.io.decode_raw(tf.strings.substr(encoded, offset, length), tf.uint8)
        raw = tf.ensure_shape(raw, [length])  # fails on a truncated header
        weights = tf.constant([256 ** k for k in (range(length) if little_endian else reversed(range(length)))],
                              tf.int64)
        return tf.reduce_sum(tf.cast(raw, tf.int64) * weights)

    def png():
        ihdr = tf.debugging.assert_equal(tf.strings.substr(encoded, 12, 4), b"IHDR", message="PNG without IHDR")
        with tf.control_dependencies([ihdr]):
            return tf.stack([unsigned(20, 4, False), unsigned(16, 4, False)])

    def bmp():
        # Signed 32-bit; a negative height means top-down rows.
        size = tf.stack([unsigned(22, 4, True), unsigned(18, 4, True)])
        return tf.where(size >= 2 ** 31, 2 ** 32 - size, size)

    return tf.switch_case(image_format - 1, [
        lambda: tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)[:2],
        png,
        lambda: tf.stack([unsigned(8, 2, True), unsigned(6, 2, True)]),  # GIF logical screen
        bmp,
    ])


def _map_dropping_failures(fn, elements, empty_row):
    """``(indices, outputs)`` of ``fn`` over the rows of ``elements``, failing rows dropped.

    An op error inside a graph aborts the whole call without saying which row caused it;
    tf.data's ``ignore_errors`` is the graph-level way to survive an error per element, so
    the caller can name the failing rows. ``empty_row`` is a zero output of ``fn``: a
    sentinel appended to the survivors makes the single batch exist even when none
    survives (``get_single_element`` is ~10x cheaper per call than ``reduce``).
    """
    count = tf.shape(elements[0], out_type=tf.int64)[0]
    dataset = tf.data.Dataset.from_tensor_slices((tf.range(count), *elements))
    dataset = dataset.map(lambda index, *row: (index, fn(*row))).ignore_errors()
    sentinel = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), empty_row))
    indices, outputs = dataset.concatenate(sentinel).batch(count + 1).get_single_element()
    return indices[:-1], outputs[:-1]


def _assert_none(failed, *message):
    """Fails the call, listing the ``failed`` element indices, unless there are none."""
    return tf.debugging.Assert(tf.equal(tf.size(failed), 0), [f"{BYTES_INPUT} element(s)", failed, *message],
                               summarize=_FAILURES_SHOWN)


def _missing(indices, count):
    present = tf.scatter_nd(indices[:, None], tf.ones_like(indices), [count])
    return tf.where(tf.equal(present, 0))[:, 0]


def decode_image_bytes(image_bytes, resize, output_shape, max_image_pixels):
    """Encoded JPEG/PNG/GIF/BMP images [N] -> ``resize``d RGB uint8 images [N, *output_shape].

    Checks, each failing the call with the indices of the offending elements: empty or not an
    image (magic bytes); unreadable header; more than ``max_image_pixels`` pixels (read from
    the header, before any decoding); undecodable data (truncated or corrupt).
    ``resize`` maps one decoded uint8 [h, w, 3] image to uint8 ``output_shape``.
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    formats = _image_formats(image_bytes)
    empty = tf.where(tf.equal(tf.strings.length(image_bytes), 0))[:, 0]
    unknown = tf.where(tf.logical_and(tf.equal(formats, _UNKNOWN), tf.strings.length(image_bytes) > 0))[:, 0]
    checks = [
        _assert_none(empty, "are empty"),
        _assert_none(unknown, "are not JPEG, PNG, GIF or BMP images"),
    ]
    with tf.control_dependencies(checks):
        read, sizes = _map_dropping_failures(_header_size, (image_bytes, formats), tf.zeros([2], tf.int64))
    with tf.control_dependencies([_assert_none(_missing(read, count), "have a truncated or corrupt header")]):
        pixels = tf.reduce_prod(sizes, axis=-1)
        too_large = tf.where(tf.logical_or(pixels > max_image_pixels, pixels < 1))[:, 0]
    budget = _assert_none(too_large, "have (height, width)", tf.gather(sizes, too_large),
                          f"outside 1..max_image_pixels={max_image_pixels} pixels; they are refused before decoding")

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)  # gray/RGBA -> RGB
        image.set_shape([None, None, 3])
        return resize(image)

    with tf.control_dependencies([budget]):
        decoded, images = _map_dropping_failures(decode, (image_bytes,), tf.zeros(output_shape, tf.uint8))
    with tf.control_dependencies([_assert_none(_missing(decoded, count), "could not be decoded (truncated or corrupt "
                                               "image data)")]):
        return tf.ensure_shape(tf.identity(images), [None, *output_shape])


def _write_saved_model(network, path, *, class_names, image_size, max_image_pixels):
    archive = keras.export.ExportArchive()
    archive.track(network)

    def resize(image):
        # One decoded uint8 [h, w, 3] image -> uint8 image_size, as evaluation resizes it.
        return resize_images(image[None], image_size)[0]

    def serve_images(images):
        images = _checked_images(images, max_image_pixels)
        names = tf.constant(class_names, dtype=tf.string)
        return _prediction_outputs(network, resize_images(images, image_size), names)

    def serve_image_bytes(image_bytes):
        names = tf.constant(class_names, dtype=tf.string)
        pixels = decode_image_bytes(image_bytes, resize, (*image_size, 3), max_image_pixels)
        return _prediction_outputs(network, pixels, names)

    archive.add_endpoint(
        SERVING_SIGNATURE,
        serve_images,
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name=IMAGES_INPUT)],
    )
    archive.add_endpoint(
        BYTES_SIGNATURE,
        serve_image_bytes,
        input_signature=[tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)],
    )
    archive.write_out(str(path), verbose=False)


def _write_metadata(version_dir, *, model_name, version, class_names, image_size):
    from daso_tf.provenance import provenance

    metadata = {
        "model_name": model_name,
        "version": int(version),
        "class_names": list(class_names),
        "image_size": list(image_size),
        "signatures": {SERVING_SIGNATURE: IMAGES_INPUT, BYTES_SIGNATURE: BYTES_INPUT},
        "provenance": provenance(),
    }
    path = pathlib.Path(version_dir) / METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    io_utils.write_json(path, metadata)  # inside the temporary version dir


def _write_warmup_requests(version_dir, *, model_name, image_size):
    """One PredictionLog per signature, replayed by TF Serving when it loads the version.

    Needs tensorflow-serving-api (``pip install daso-tf[serving]``); without it the version is
    exported without warm-up requests (TF Serving then warms up on the first requests).
    """
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        return

    black = np.zeros((1, *image_size, 3), np.uint8)
    png = tf.io.encode_png(black[0]).numpy()
    requests = [
        (SERVING_SIGNATURE, IMAGES_INPUT, tf.make_tensor_proto(black)),
        (BYTES_SIGNATURE, BYTES_INPUT, tf.make_tensor_proto([png], dtype=tf.string)),
    ]
    path = pathlib.Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature_name, input_name, tensor in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
            )
            request.inputs[input_name].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
