"""DASO inside a user's own Keras program: any backbone, fit/evaluate/predict, .keras round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import daso_tf
from tests.helpers import as_dataset, model_state, synthetic_batches


def functional_backbone():
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(images)
    x = keras.layers.BatchNormalization()(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, features, name="user_backbone")


@keras.saving.register_keras_serializable(package="tests")
class SubclassedBackbone(keras.Model):
    def __init__(self, filters=6, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, images, training=False):
        return self.pool(self.conv(images))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def user_model(backbone, num_classes=4):
    return daso_tf.DASO(backbone=backbone, num_classes=num_classes,
                        normalization=((0.5,) * 3, (0.25,) * 3), warmup_steps=1, queue_size=4,
                        histogram_period=1, threshold=0.5)


@pytest.mark.parametrize("make_backbone", [functional_backbone, SubclassedBackbone])
def test_any_backbone_trains_evaluates_and_predicts(make_backbone):
    model = user_model(make_backbone())
    model.compile()
    history = model.fit(as_dataset(synthetic_batches(3)), verbose=0).history
    assert np.isfinite(history["loss"][-1]) and history["loss_align"][-1] > 0
    assert model.queue.prototypes.shape[-1] == model.feature_dim
    x, y = synthetic_batches(1)[0][0]
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    assert model.predict(x, verbose=0).shape == (len(x), 4)


def test_keras_format_round_trip_keeps_all_state_and_continues_identically(tmp_path):
    batches = synthetic_batches(4)
    model = user_model(functional_backbone())
    model.compile()
    model.fit(as_dataset(batches[:3]), verbose=0)
    path = tmp_path / "daso.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is daso_tf.DASO
    before, after = model_state(model), model_state(loaded)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert int(loaded.step.numpy()) == 3
    for m in (model, loaded):
        m.train_step_with_outputs(batches[3])
    for key, value in model_state(model).items():
        np.testing.assert_allclose(model_state(loaded)[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_export_writes_the_serving_layout(tmp_path):
    model = user_model(functional_backbone())
    model.build((None, 16, 16, 3))
    version_dir = model.export(tmp_path / "serving", model_name="toy")
    assert str(version_dir).endswith("toy/1")
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    images = synthetic_batches(1)[0][0][0]
    out = served(images=tf.constant(images))
    expected = tf.nn.softmax(model(images)).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_unbuilt_model_gives_clear_errors():
    model = user_model(functional_backbone())
    with pytest.raises(ValueError, match="built"):
        model.export("/tmp/never")
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        model.compile()
        model.fit(np.zeros((4, 16, 16, 3)))
