import pathlib
import re
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

import daso_tf.serving.saved_model as saved_model_module
from daso_tf.serving import BYTES_SIGNATURE, SERVING_SIGNATURE, export_saved_model, next_version
from daso_tf.serving import write_models_config

from export_test_utils import (
    CLASS_NAMES,
    IMAGE_SIZE,
    MODEL_NAME,
    build_stand_in_network,
    keras_probabilities,
    pil_resize,
    random_images,
)


def _hidden_entries(model_dir):
    return sorted(p.name for p in pathlib.Path(model_dir).iterdir() if p.name.startswith("."))


def test_layout_is_what_tf_serving_scans(exported):
    export_dir, version_dir = exported
    assert pathlib.Path(version_dir) == export_dir / MODEL_NAME / "1"
    for relative in ("saved_model.pb", "variables/variables.index", saved_model_module.WARMUP_FILE):
        assert (pathlib.Path(version_dir) / relative).is_file(), relative
    assert _hidden_entries(export_dir / MODEL_NAME) == []  # no temporary leftovers

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((export_dir / "models.config").read_text(), config)
    [entry] = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        MODEL_NAME,
        f"/models/{MODEL_NAME}",
        "tensorflow",
    )


def test_saved_model_cli_lists_both_signatures(exported):
    command = shutil.which("saved_model_cli")
    command = [command] if command else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run(
        [*command, "show", "--dir", exported[1], "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    signatures = {}
    for block in result.stdout.split("signature_def['")[1:]:
        name = block.split("'", 1)[0]
        inputs_text, outputs_text = block.split("contains the following output(s):")
        pattern = r"(\w+)s\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))"
        signatures[name] = {
            (kind, key): (dtype, shape.replace(" ", ""))
            for kind, key, dtype, shape in re.findall(pattern, inputs_text + outputs_text)
        }
    k = len(CLASS_NAMES)
    outputs = {
        ("output", "probabilities"): ("DT_FLOAT", f"(-1,{k})"),
        ("output", "class_ids"): ("DT_INT64", "(-1)"),
        ("output", "class_names"): ("DT_STRING", "(-1)"),
    }
    assert signatures[SERVING_SIGNATURE] == {("input", "images"): ("DT_UINT8", "(-1,-1,-1,3)"), **outputs}
    assert signatures[BYTES_SIGNATURE] == {("input", "image_bytes"): ("DT_STRING", "(-1)"), **outputs}


def test_serving_default_matches_keras_in_process(network, signatures):
    images = random_images(6, seed=1)
    outputs = signatures[SERVING_SIGNATURE](images=tf.constant(images))
    expected = keras_probabilities(network, images)
    assert outputs["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_ids"].numpy(), expected.argmax(-1))
    assert len(set(expected.argmax(-1))) > 1  # the comparison covers several classes
    assert [n.decode() for n in outputs["class_names"].numpy()] == [
        CLASS_NAMES[i] for i in expected.argmax(-1)
    ]


def test_signatures_reject_wrong_dtype_and_shape(signatures):
    serving, from_bytes = signatures[SERVING_SIGNATURE], signatures[BYTES_SIGNATURE]
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        serving(images=tf.zeros((2, *IMAGE_SIZE, 3), tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="wrong number of channels"):
        serving(images=tf.zeros((2, *IMAGE_SIZE, 1), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank 4"):
        serving(images=tf.zeros((*IMAGE_SIZE, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="string"):
        from_bytes(image_bytes=tf.zeros((2,), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        from_bytes(image_bytes=tf.constant([b"not an image"]))


def test_warmup_requests_replay_through_their_signatures(exported, signatures):
    path = pathlib.Path(exported[1]) / saved_model_module.WARMUP_FILE
    seen = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.name == MODEL_NAME
        name = request.model_spec.signature_name
        inputs = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
        outputs = signatures[name](**{key: tf.constant(value) for key, value in inputs.items()})
        assert outputs["probabilities"].shape == (1, len(CLASS_NAMES))
        seen.append(name)
    assert seen == [SERVING_SIGNATURE, BYTES_SIGNATURE]


def test_next_version_counts_integer_directories_only(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    for name in ("1", "3", "notes", ".tmp-export-9-x"):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")
    assert next_version(tmp_path) == 4


def test_versions_refusal_overwrite_and_algorithm_model(network, tmp_path):
    model_dir = tmp_path / MODEL_NAME
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "marker").write_text("previous export")
    algorithm_model = types.SimpleNamespace(ema_network=network)  # what daso_tf.DASO exposes

    path = export_saved_model(
        algorithm_model, tmp_path, model_name=MODEL_NAME, class_names=CLASS_NAMES
    )
    assert path == str(model_dir / "2")

    with pytest.raises(FileExistsError, match=re.escape(str(model_dir / "1"))):
        export_saved_model(network, tmp_path, model_name=MODEL_NAME, version=1, class_names=CLASS_NAMES)
    assert (model_dir / "1" / "marker").is_file()

    renamed = [name.upper() for name in CLASS_NAMES]
    export_saved_model(
        network, tmp_path, model_name=MODEL_NAME, version=1, class_names=renamed, overwrite=True
    )
    assert not (model_dir / "1" / "marker").exists()
    outputs = tf.saved_model.load(str(model_dir / "1")).signatures[SERVING_SIGNATURE](
        images=tf.constant(random_images(4, seed=2))
    )
    assert {n.decode() for n in outputs["class_names"].numpy()} <= set(renamed)
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]


def test_failed_export_leaves_no_version_directory(network, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("injected failure while writing warmup requests")

    monkeypatch.setattr(saved_model_module, "_write_warmup_requests", fail)
    with pytest.raises(RuntimeError, match="injected"):
        export_saved_model(network, tmp_path, model_name=MODEL_NAME, class_names=CLASS_NAMES)
    assert list((tmp_path / MODEL_NAME).iterdir()) == []

    # A failed overwrite keeps the version that was there.
    (tmp_path / MODEL_NAME / "1").mkdir()
    (tmp_path / MODEL_NAME / "1" / "marker").write_text("previous export")
    with pytest.raises(RuntimeError, match="injected"):
        export_saved_model(
            network, tmp_path, model_name=MODEL_NAME, version=1, class_names=CLASS_NAMES, overwrite=True
        )
    assert [p.name for p in (tmp_path / MODEL_NAME).iterdir()] == ["1"]
    assert (tmp_path / MODEL_NAME / "1" / "marker").read_text() == "previous export"


def test_bad_arguments_are_refused_before_writing(network, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    kwargs = dict(model_name=MODEL_NAME, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match=re.escape(str(a_file))):
        export_saved_model(network, a_file, **kwargs)
    with pytest.raises(ValueError, match="export_dir"):
        export_saved_model(network, "", **kwargs)
    with pytest.raises(ValueError, match="export_dir"):
        export_saved_model(network, a_file / "below_a_file", **kwargs)
    for bad_name in ("", "a/b", "..", ".hidden", None):
        with pytest.raises(ValueError, match="model_name"):
            export_saved_model(network, tmp_path, model_name=bad_name, class_names=CLASS_NAMES)
    for bad_version in (0, -1, True, "2", 1.0):
        with pytest.raises(ValueError, match="version"):
            export_saved_model(network, tmp_path, version=bad_version, **kwargs)
    with pytest.raises(ValueError, match="4 class_names"):
        export_saved_model(network, tmp_path, model_name=MODEL_NAME, class_names=CLASS_NAMES[:4])
    with pytest.raises(ValueError, match="class_names"):
        export_saved_model(network, tmp_path, model_name=MODEL_NAME, class_names="cat")
    with pytest.raises(ValueError, match="image_size"):
        export_saved_model(network, tmp_path, image_size=(32, 0), **kwargs)
    with pytest.raises(TypeError, match="ema_network"):
        export_saved_model(lambda x: x, tmp_path, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_models_config_keeps_other_models(tmp_path):
    write_models_config(tmp_path, "daso")
    write_models_config(tmp_path, "fixmatch")
    write_models_config(tmp_path, "daso")
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((tmp_path / "models.config").read_text(), config)
    assert [(c.name, c.base_path) for c in config.model_config_list.config] == [
        ("daso", "/models/daso"),
        ("fixmatch", "/models/fixmatch"),
    ]
    (tmp_path / "models.config").write_text("not a config {")
    with pytest.raises(ValueError, match="models.config"):
        write_models_config(tmp_path, "daso")


@pytest.mark.parametrize("policy", ["float64", "mixed_float16"])
def test_outputs_are_float32_under_other_dtype_policies(policy, tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        network = build_stand_in_network(seed=3)
    finally:
        keras.config.set_dtype_policy(previous)
    images = random_images(5, height=40, width=24, seed=4)
    expected = keras_probabilities(network, pil_resize(images))

    path = export_saved_model(network, tmp_path, model_name=MODEL_NAME, class_names=CLASS_NAMES)
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures[SERVING_SIGNATURE](images=tf.constant(images))

    assert outputs["probabilities"].dtype == tf.float32
    # float64 weights are served as float64 (the SavedModel keeps the variables' dtype).
    variable_dtype = {"float64": tf.float64, "mixed_float16": tf.float32}[policy]
    assert {v.dtype for v in loaded.variables} == {variable_dtype}
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_ids"].numpy(), outputs["probabilities"].numpy().argmax(-1))
