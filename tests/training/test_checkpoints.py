"""daso_tf.training.checkpoints: atomic saves, pruning, best, restore."""

import os

import numpy as np
import tensorflow as tf

from daso_tf.training.checkpoints import CheckpointManager


def _manager(tmp_path, **kwargs):
    variable = tf.Variable(np.zeros(3, np.float32))
    step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(v=variable, step=step)
    return CheckpointManager(checkpoint, str(tmp_path / "checkpoints"), **kwargs), variable, step


def test_keeps_last_n_and_restores_latest(tmp_path):
    manager, variable, step = _manager(tmp_path, max_to_keep=2)
    assert manager.restore_latest() is None
    for s in (10, 20, 30):
        variable.assign([s, s, s])
        step.assign(s)
        manager.save(s)
    assert manager.checkpoint_steps() == [20, 30]
    variable.assign([0, 0, 0])
    assert manager.restore_latest() == 30
    np.testing.assert_array_equal(variable.numpy(), [30, 30, 30])
    assert int(step.numpy()) == 30


def test_incomplete_checkpoint_is_ignored(tmp_path):
    manager, variable, _ = _manager(tmp_path)
    manager.save(10)
    # A process killed mid-write leaves only a temporary directory (or a dir without index).
    os.makedirs(os.path.join(manager.directory, ".tmp-ckpt-000000020-999"))
    os.makedirs(os.path.join(manager.directory, "ckpt-000000030"))
    assert manager.latest_step == 10
    manager.save(40)
    assert not os.path.exists(os.path.join(manager.directory, ".tmp-ckpt-000000020-999"))


def test_best_replaces_previous_best_and_survives_pruning(tmp_path):
    manager, variable, _ = _manager(tmp_path, max_to_keep=1)
    variable.assign([1, 1, 1])
    manager.save_best(10, 50.0)
    variable.assign([2, 2, 2])
    manager.save_best(20, 60.0)
    for s in (30, 40):
        manager.save(s)
    best = manager.best_info()
    assert best["step"] == 20 and best["valid_top1"] == 60.0
    assert sorted(n for n in os.listdir(manager.directory) if n.startswith("best-")) == ["best-000000020"]
    variable.assign([0, 0, 0])
    manager.restore(best["path"])
    np.testing.assert_array_equal(variable.numpy(), [2, 2, 2])


def test_resaving_same_step_overwrites(tmp_path):
    manager, variable, _ = _manager(tmp_path)
    manager.save(10)
    variable.assign([5, 5, 5])
    manager.save(10)
    variable.assign([0, 0, 0])
    manager.restore_latest()
    np.testing.assert_array_equal(variable.numpy(), [5, 5, 5])


def test_non_chief_writes_nothing_in_directory(tmp_path):
    manager, _, _ = _manager(tmp_path, is_chief=False, worker_id="1")
    manager.save(10)
    assert manager.checkpoint_steps() == []
    assert os.listdir(manager.directory) == []
