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
"""

import json
import os
import pathlib
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf

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

_TEMP_PREFIX = ".tmp-export-"
_OLD_PREFIX = ".old-export-"


def export_saved_model(
    model_or_network,
    export_dir,
    *,
    model_name,
    version=None,
    class_names,
    image_size=(32, 32),
    overwrite=False,
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

    Returns:
        The path of the version directory (str).

    The version directory appears atomically: everything is written into a temporary
    sibling first and renamed into place, so a failure leaves no partial version behind.
    Outputs are float32 whatever the network's dtype policy (float32, float64 or mixed);
    the network's variables are saved in their own dtype.
    """
    network = _resolve_network(model_or_network)
    model_name = _check_model_name(model_name)
    image_size = _check_image_size(image_size)
    class_names = _check_class_names(class_names)
    version = None if version is None else _check_version(version)
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
    temp_dir = model_dir / f"{_TEMP_PREFIX}{version}-{uuid.uuid4().hex}"
    try:
        _write_saved_model(network, temp_dir, class_names=class_names, image_size=image_size)
        _write_warmup_requests(temp_dir, model_name=model_name, image_size=image_size)
        _write_metadata(temp_dir, model_name=model_name, version=version, class_names=class_names,
                        image_size=image_size)
        write_models_config(export_dir, model_name)
        _move_into_place(temp_dir, version_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
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
    temp_path = path.with_name(f"{_TEMP_PREFIX}{MODELS_CONFIG_FILE}-{uuid.uuid4().hex}")
    try:
        temp_path.write_text(text_format.MessageToString(config))
        os.replace(temp_path, path)
    finally:
        if temp_path.exists():
            temp_path.unlink()
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


def _checked_images(images):
    # A loaded signature checks the dtype it is fed but not the shape, and static checks
    # (tf.ensure_shape) pass at trace time: check the channels at run time. A wrong rank
    # is rejected by the resize's einsum ("Expected input 0 to have rank 4").
    channels = tf.shape(images)[-1]
    message = f"{IMAGES_INPUT} must be uint8 [N, H, W, 3] (RGB); wrong number of channels"
    with tf.control_dependencies([tf.debugging.assert_equal(channels, 3, message=message)]):
        return tf.identity(images)


def _write_saved_model(network, path, *, class_names, image_size):
    archive = keras.export.ExportArchive()
    archive.track(network)

    def serve_images(images):
        images = _checked_images(images)
        names = tf.constant(class_names, dtype=tf.string)
        return _prediction_outputs(network, resize_images(images, image_size), names)

    def serve_image_bytes(image_bytes):
        names = tf.constant(class_names, dtype=tf.string)

        def decode_and_resize(encoded):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            return resize_images(image[None], image_size)[0]

        pixels = tf.map_fn(
            decode_and_resize,
            image_bytes,
            fn_output_signature=tf.TensorSpec((*image_size, 3), tf.uint8),
        )
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
    path.write_text(json.dumps(metadata, indent=2))  # inside the temporary version dir


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


def _move_into_place(temp_dir, version_dir, *, overwrite):
    if not version_dir.exists():
        os.rename(temp_dir, version_dir)
        return
    if not overwrite:  # appeared while we were writing
        raise FileExistsError(f"version directory {version_dir} already exists.")
    # A directory cannot be renamed over a non-empty one: move the old one aside first.
    old_dir = version_dir.with_name(f"{_OLD_PREFIX}{version_dir.name}-{uuid.uuid4().hex}")
    os.rename(version_dir, old_dir)
    try:
        os.rename(temp_dir, version_dir)
    except BaseException:
        os.rename(old_dir, version_dir)
        raise
    shutil.rmtree(old_dir, ignore_errors=True)
