"""The exported SavedModel alone reproduces the Keras network, in a fresh Python process
that imports only tensorflow and numpy (none of the project's code)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from export_test_utils import CLASS_NAMES, keras_probabilities, pil_resize, random_images
from PIL import Image

FRESH_PROCESS_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

config = json.load(open(sys.argv[1]))
ours = sorted({m.split(".")[0] for m in sys.modules} & {"daso_tf", "export"})
assert not ours, f"project modules imported in the fresh process: {ours}"
signatures = tf.saved_model.load(config["version_dir"]).signatures


def as_numpy(value):
    value = value.numpy()
    return value.astype(bytes) if value.dtype == object else value  # npz without pickles


pixels = np.load(config["pixels"])
results = {}
for key in pixels.files:
    outputs = signatures["serving_default"](images=tf.constant(pixels[key]))
    results.update({f"{key}/{name}": as_numpy(value) for name, value in outputs.items()})
for key, files in config["encoded"].items():
    encoded = tf.constant([open(path, "rb").read() for path in files])
    outputs = signatures["predict_images_bytes"](image_bytes=encoded)
    results.update({f"{key}/{name}": as_numpy(value) for name, value in outputs.items()})
np.savez(config["results"], **results)
"""


def _encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def test_fresh_process_matches_keras(network, exported, tmp_path):
    train_size = random_images(4, seed=10)
    other_size = random_images(3, height=45, width=27, seed=11)
    png_images = random_images(3, seed=12)
    jpeg_images = random_images(3, height=50, width=40, seed=13)
    encoded = {"png": [], "jpeg": []}
    for key, images, fmt in (("png", png_images, "PNG"), ("jpeg", jpeg_images, "JPEG")):
        for i, image in enumerate(images):
            path = tmp_path / f"{key}_{i}.{key}"
            path.write_bytes(_encode(image, fmt))
            encoded[key].append(str(path))
    np.savez(tmp_path / "pixels.npz", train_size=train_size, other_size=other_size)
    config = {
        "version_dir": exported[1],
        "pixels": str(tmp_path / "pixels.npz"),
        "encoded": encoded,
        "results": str(tmp_path / "results.npz"),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS_SCRIPT, str(tmp_path / "config.json")],
        cwd=tmp_path,  # not the repository: nothing of ours is importable
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    results = np.load(tmp_path / "results.npz")

    jpeg_decoded = np.stack([tf.io.decode_jpeg(open(p, "rb").read()).numpy() for p in encoded["jpeg"]])
    expected = {
        "train_size": keras_probabilities(network, train_size),
        "other_size": keras_probabilities(network, pil_resize(other_size)),
        "png": keras_probabilities(network, png_images),  # lossless: the original pixels
        "jpeg": keras_probabilities(network, pil_resize(jpeg_decoded)),
    }
    for key, probabilities in expected.items():
        served = results[f"{key}/probabilities"]
        assert served.dtype == np.float32, key
        np.testing.assert_allclose(served, probabilities, atol=1e-5, err_msg=key)
        np.testing.assert_array_equal(results[f"{key}/class_ids"], served.argmax(-1), err_msg=key)
        np.testing.assert_array_equal(results[f"{key}/class_ids"], probabilities.argmax(-1), err_msg=key)
        names = [CLASS_NAMES[i] for i in probabilities.argmax(-1)]
        assert [n.decode() for n in results[f"{key}/class_names"]] == names, key
