"""FixMatch + ABC model: ABC head in both networks, evaluation with it, seeded masks."""

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms.abc_head import ABC_HEAD
from tests.helpers import as_dataset, synthetic_batches, tiny_daso


def test_evaluation_uses_the_ema_abc_head_and_training_runs():
    model = tiny_daso(algorithm="fixmatch_abc", seed=3, threshold=0.5)
    model.compile()
    history = model.fit(as_dataset(synthetic_batches(2)), epochs=1, verbose=0)
    assert {"loss", "loss_x", "loss_u", "loss_abc"} <= set(history.history)
    assert np.isfinite(history.history["loss"]).all()
    (x_l, y_l), _ = synthetic_batches(1, seed=5)[0]
    features = model.ema_network.features(x_l)
    np.testing.assert_allclose(model(x_l), model.ema_network.head(ABC_HEAD)(features), rtol=1e-6)
    assert not np.allclose(model(x_l), model.ema_network.classifier(features))
    assert model.evaluation_network is model.ema_network
    # the ABC head is trained and EMA-tracked like the rest
    assert any(ABC_HEAD in v.path for v in model.trainable_variables)


def test_masks_are_reproducible_and_the_seed_state_is_checkpointed(tmp_path):
    batches = synthetic_batches(2)

    def compiled(seed):
        model = tiny_daso(algorithm="fixmatch_abc", seed=seed)
        model.compile()
        model.optimizer.build(model.trainable_variables)
        return model

    def losses(model):
        step = tf.function(model.train_step_with_outputs)
        return [float(step(b)[0]["loss_abc"]) for b in batches]

    first, second = compiled(7), compiled(7)
    second.set_weights(first.get_weights())
    path = tf.train.Checkpoint(model=first, optimizer=first.optimizer).save(str(tmp_path / "ckpt"))
    assert any("seed_state" in name for name, _ in tf.train.list_variables(path))
    expected = losses(first)
    assert losses(second) == pytest.approx(expected, rel=1e-6)  # same seed, same masks
    restored = compiled(99)  # another seed, but the checkpoint restores the seed state
    tf.train.Checkpoint(model=restored, optimizer=restored.optimizer).restore(path)
    assert losses(restored) == pytest.approx(expected, rel=1e-6)
    assert losses(compiled(99)) != pytest.approx(expected, rel=1e-6)


def test_needs_labeled_counts():
    with pytest.raises(ValueError, match="labeled_class_counts"):
        tiny_daso(algorithm="fixmatch_abc", labeled_class_counts=None)
