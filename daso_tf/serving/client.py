"""Build (and optionally send) TF Serving predict requests for an exported classifier.

REST bodies use the row ("instances") format:
    serving_default       {"signature_name": "serving_default", "instances": [<H x W x 3 ints>, ...]}
    predict_images_bytes  {"signature_name": "predict_images_bytes", "instances": [{"b64": "..."}, ...]}
POST them to `http://HOST:8501/v1/models/<name>[/versions/<v>]:predict`.
gRPC requests are `tensorflow_serving.apis.predict_pb2.PredictRequest` for port 8500.

CLI:
    python -m daso_tf.serving.client --images DIR --format rest|grpc
        [--signature serving_default|predict_images_bytes] [--model-name daso] [--version N]
        [--url URL]
Without --url the request is printed as JSON; with --url it is sent (REST: full predict URL;
gRPC: host:port) and the response is printed as JSON.
"""

import argparse
import base64
import io
import json
import pathlib
import sys
import urllib.request

import numpy as np

from daso_tf.serving.saved_model import BYTES_INPUT, BYTES_SIGNATURE, IMAGES_INPUT, SERVING_SIGNATURE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_image_files(folder):
    """Image files directly inside `folder` (by suffix), sorted by name."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ValueError(f"images folder {folder} is not a directory.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found in {folder}.")
    return files


def read_image_bytes(images):
    """Encoded bytes of each image: `images` is a folder, a list of paths or a list of bytes."""
    if isinstance(images, (str, pathlib.Path)):
        images = list_image_files(images)
    encoded = []
    for image in images:
        if isinstance(image, (bytes, bytearray)):
            encoded.append(bytes(image))
        elif isinstance(image, (str, pathlib.Path)):
            encoded.append(pathlib.Path(image).read_bytes())
        else:
            raise TypeError(
                f"images must be a folder, paths or encoded bytes; got an item of type "
                f"{type(image).__name__}."
            )
    if not encoded:
        raise ValueError("images is empty; expected at least one image.")
    return encoded


def read_pixels(images):
    """uint8 pixels [N, H, W, 3] from a folder, a list of paths, a list of [H, W, 3] arrays
    or an [N, H, W, 3] array. All images must share one size (one request is one batch)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        arrays = list(images)
    else:
        if isinstance(images, (str, pathlib.Path)):
            images = list_image_files(images)
        arrays = [_decode(image) if not isinstance(image, np.ndarray) else image for image in images]
    if not arrays:
        raise ValueError("images is empty; expected at least one image.")
    for array in arrays:
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"each image must be [H, W, 3]; got shape {array.shape}.")
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise ValueError(
            f"images of different sizes {shapes} cannot share one serving_default batch; "
            f"send encoded files with the {BYTES_SIGNATURE} signature instead (it resizes "
            "each image in the server) or resize them beforehand."
        )
    pixels = np.stack(arrays)
    if pixels.dtype != np.uint8:
        if np.issubdtype(pixels.dtype, np.floating) or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(f"pixel arrays must be uint8 (0..255); got dtype {pixels.dtype}.")
        pixels = pixels.astype(np.uint8)
    return pixels


def rest_body(images, *, signature_name=SERVING_SIGNATURE):
    """The JSON-ready REST predict body ("instances" row format) for `signature_name`."""
    if signature_name == SERVING_SIGNATURE:
        instances = read_pixels(images).tolist()
    elif signature_name == BYTES_SIGNATURE:
        instances = [{"b64": base64.b64encode(b).decode("ascii")} for b in read_image_bytes(images)]
    else:
        raise ValueError(_signature_error(signature_name))
    return {"signature_name": signature_name, "instances": instances}


def grpc_request(images, *, model_name="daso", signature_name=SERVING_SIGNATURE, version=None):
    """A `PredictRequest` for `signature_name` (uint8 pixels or encoded bytes)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    if signature_name == SERVING_SIGNATURE:
        request.inputs[IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(read_pixels(images)))
    elif signature_name == BYTES_SIGNATURE:
        tensor = tf.make_tensor_proto(read_image_bytes(images), dtype=tf.string)
        request.inputs[BYTES_INPUT].CopyFrom(tensor)
    else:
        raise ValueError(_signature_error(signature_name))
    return request


def rest_url(host="http://localhost:8501", *, model_name="daso", version=None):
    """`<host>/v1/models/<model_name>[/versions/<version>]:predict`."""
    versions = f"/versions/{int(version)}" if version is not None else ""
    return f"{host.rstrip('/')}/v1/models/{model_name}{versions}:predict"


def post_json(url, body, *, timeout=30.0):
    """POST `body` as JSON to `url` and return the decoded JSON response."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def send_grpc(target, request, *, timeout=30.0):
    """Send `request` to a model server at `target` ("host:port") and return the response."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=timeout)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m daso_tf.serving.client",
        description="Build a TF Serving predict request for a folder of images; print or send it.",
    )
    parser.add_argument("--images", required=True, help="folder of JPEG/PNG images")
    parser.add_argument("--format", choices=("rest", "grpc"), default="rest")
    parser.add_argument(
        "--signature", choices=(SERVING_SIGNATURE, BYTES_SIGNATURE), default=SERVING_SIGNATURE
    )
    parser.add_argument("--model-name", default="daso")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument(
        "--url",
        default=None,
        help="send the request: REST predict URL (e.g. "
        "http://localhost:8501/v1/models/daso:predict) or gRPC host:port (e.g. localhost:8500)",
    )
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    try:
        if args.format == "rest":
            body = rest_body(args.images, signature_name=args.signature)
            output = post_json(args.url, body, timeout=args.timeout) if args.url else body
            print(json.dumps(output))
        else:
            from google.protobuf import json_format

            request = grpc_request(
                args.images,
                model_name=args.model_name,
                signature_name=args.signature,
                version=args.version,
            )
            message = send_grpc(args.url, request, timeout=args.timeout) if args.url else request
            print(json_format.MessageToJson(message))
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    return 0


def _decode(path):
    from PIL import Image

    with Image.open(io.BytesIO(pathlib.Path(path).read_bytes())) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _signature_error(signature_name):
    return (
        f"signature_name must be {SERVING_SIGNATURE!r} or {BYTES_SIGNATURE!r}; "
        f"got {signature_name!r}."
    )


if __name__ == "__main__":
    sys.exit(main())
