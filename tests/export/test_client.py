import base64
import io
import json
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from export_test_utils import (CLASS_NAMES, IMAGE_SIZE, MODEL_NAME, keras_probabilities, pil_resize,
                               random_images)
from google.protobuf import json_format
from PIL import Image
from tensorflow_serving.apis import predict_pb2

from daso_tf.serving import BYTES_SIGNATURE, SERVING_SIGNATURE
from daso_tf.serving import client


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three 32x32 images (two PNG, one JPEG) plus a file that is not an image."""
    folder = tmp_path_factory.mktemp("images")
    images = random_images(3, seed=20)
    for name, image in zip(("b.png", "a.jpg", "c.png"), images):
        Image.fromarray(image).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _pil_pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _tensor_from_rest_instances(instances, dtype):
    """What TF Serving does with row-format instances for a single-input signature."""
    if dtype == tf.string:
        return tf.constant([base64.b64decode(instance["b64"]) for instance in instances])
    return tf.constant(np.asarray(instances, dtype=dtype.as_numpy_dtype))


def _assert_matches_keras(outputs, network, pixels):
    expected = keras_probabilities(network, pixels)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_ids"].numpy(), expected.argmax(-1))
    names = [CLASS_NAMES[i] for i in expected.argmax(-1)]
    assert [n.decode() for n in outputs["class_names"].numpy()] == names


def test_list_image_files_sorted_and_filtered(image_folder, tmp_path):
    assert [p.name for p in client.list_image_files(image_folder)] == ["a.jpg", "b.png", "c.png"]
    with pytest.raises(ValueError, match="no image files"):
        client.list_image_files(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        client.list_image_files(tmp_path / "missing")


def test_rest_pixels_body_round_trips(image_folder, network, signatures):
    body = json.loads(json.dumps(client.rest_body(image_folder)))
    assert body["signature_name"] == SERVING_SIGNATURE
    pixels = np.stack([_pil_pixels(p) for p in sorted(image_folder.glob("*.*g"))])
    np.testing.assert_array_equal(np.asarray(body["instances"]), pixels)
    outputs = signatures[SERVING_SIGNATURE](images=_tensor_from_rest_instances(body["instances"], tf.uint8))
    _assert_matches_keras(outputs, network, pixels)


def test_rest_b64_body_round_trips(image_folder, network, signatures):
    body = json.loads(json.dumps(client.rest_body(image_folder, signature_name=BYTES_SIGNATURE)))
    files = client.list_image_files(image_folder)
    assert body["signature_name"] == BYTES_SIGNATURE
    assert [base64.b64decode(i["b64"]) for i in body["instances"]] == [p.read_bytes() for p in files]
    encoded = _tensor_from_rest_instances(body["instances"], tf.string)
    outputs = signatures[BYTES_SIGNATURE](image_bytes=encoded)
    # The server decodes with TF (its JPEG decoder may differ from PIL's by a level or two).
    decoded = np.stack([tf.io.decode_image(p.read_bytes(), channels=3).numpy() for p in files])
    _assert_matches_keras(outputs, network, decoded)


def test_grpc_request_for_a_folder_runs_through_serving_default(image_folder, network, signatures):
    request = client.grpc_request(image_folder, model_name=MODEL_NAME, version=1)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert (request.model_spec.name, request.model_spec.signature_name) == (MODEL_NAME, SERVING_SIGNATURE)
    assert request.model_spec.version.value == 1
    images = tf.make_ndarray(request.inputs["images"])
    assert images.dtype == np.uint8 and images.shape == (3, *IMAGE_SIZE, 3)
    outputs = signatures[SERVING_SIGNATURE](images=tf.constant(images))
    pixels = np.stack([_pil_pixels(p) for p in client.list_image_files(image_folder)])
    _assert_matches_keras(outputs, network, pixels)


def test_grpc_bytes_request_takes_images_of_any_size(network, signatures, tmp_path):
    images = [random_images(1, height=h, width=w, seed=h)[0] for h, w in ((32, 32), (20, 48))]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    with pytest.raises(ValueError, match=BYTES_SIGNATURE):
        client.rest_body(tmp_path)  # one serving_default batch needs one image size

    request = client.grpc_request(paths, signature_name=BYTES_SIGNATURE)
    encoded = tf.make_ndarray(request.inputs["image_bytes"])
    assert list(encoded) == [p.read_bytes() for p in paths]
    outputs = signatures[BYTES_SIGNATURE](image_bytes=tf.constant(encoded))
    resized = pil_resize(images[1][None])[0]
    _assert_matches_keras(outputs, network, np.stack([images[0], resized]))


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="signature_name"):
        client.rest_body(np.zeros((1, 4, 4, 3), np.uint8), signature_name="predict")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        client.rest_body(np.zeros((1, 4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        client.rest_body(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="encoded bytes"):
        client.rest_body([np.zeros((4, 4, 3), np.uint8)], signature_name=BYTES_SIGNATURE)


def test_rest_url():
    assert client.rest_url() == "http://localhost:8501/v1/models/daso:predict"
    assert client.rest_url("http://h:1/", model_name="m", version=3) == "http://h:1/v1/models/m/versions/3:predict"


def test_cli_prints_rest_and_grpc_bodies(image_folder, capsys):
    client.main(["--images", str(image_folder), "--format", "rest"])
    assert json.loads(capsys.readouterr().out) == client.rest_body(image_folder)

    client.main(["--images", str(image_folder), "--format", "grpc", "--signature", BYTES_SIGNATURE])
    request = json_format.Parse(capsys.readouterr().out, predict_pb2.PredictRequest())
    assert request == client.grpc_request(image_folder, signature_name=BYTES_SIGNATURE)

    with pytest.raises(SystemExit):
        client.main(["--images", str(image_folder / "missing"), "--format", "rest"])
    assert "not a directory" in capsys.readouterr().err


def test_cli_posts_rest_body_to_url(image_folder, capsys, monkeypatch):
    sent = []

    class FakeResponse(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(request, timeout):  # no network in tests
        sent.append((request.full_url, request.get_method(), request.headers, request.data, timeout))
        return FakeResponse(json.dumps({"predictions": [{"class_ids": 1}]}).encode())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    url = "http://serving:8501/v1/models/daso:predict"
    client.main(["--images", str(image_folder), "--url", url, "--signature", BYTES_SIGNATURE])
    assert json.loads(capsys.readouterr().out) == {"predictions": [{"class_ids": 1}]}
    [(full_url, method, headers, data, timeout)] = sent
    assert (full_url, method, headers["Content-type"], timeout) == (url, "POST", "application/json", 30.0)
    assert json.loads(data) == client.rest_body(image_folder, signature_name=BYTES_SIGNATURE)
