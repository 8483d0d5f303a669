"""daso_tf.training.checkpoints: atomic saves, pruning, best, restore, damage, disk full."""

import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.io_utils import DiskFullError
from daso_tf.training.checkpoints import CheckpointManager, NoUsableCheckpointError


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
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = os.path.join(manager.directory, f".tmp-tmp-ckpt-000000020-{int(dead.stdout)}-0123abcd")
    os.makedirs(leftover)
    os.makedirs(os.path.join(manager.directory, "ckpt-000000030"))
    assert manager.latest_step == 10
    manager.save(40)
    assert sorted(os.listdir(manager.directory)) == ["ckpt-000000010", "ckpt-000000040"]


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


# --------------------------------------------------------------------------- damage and faults


def _damage(manager, step, how):
    directory = os.path.dirname(manager.path_for(step))
    data = os.path.join(directory, "ckpt.data-00000-of-00001")
    if how == "truncate":
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)
    elif how == "flip":
        content = bytearray(open(data, "rb").read())
        content[len(content) // 2] ^= 0xFF
        open(data, "wb").write(bytes(content))
    elif how == "no_index":
        os.remove(os.path.join(directory, "ckpt.index"))


def _big_manager(tmp_path, log, **kwargs):
    variable = tf.Variable(np.zeros(20_000, np.float64))  # 160 kB: truncation cuts real data
    checkpoint = tf.train.Checkpoint(v=variable)
    return CheckpointManager(checkpoint, str(tmp_path / "checkpoints"), log=log, **kwargs), variable


def test_restore_walks_back_over_damaged_checkpoints(tmp_path):
    lines = []
    manager, variable = _big_manager(tmp_path, lines.append, max_to_keep=4)
    for step in (10, 20, 30, 40):
        variable.assign(np.full(20_000, step, np.float64))
        manager.save(step)
    _damage(manager, 40, "truncate")
    _damage(manager, 30, "flip")
    _damage(manager, 20, "no_index")
    variable.assign(np.full(20_000, -1.0))
    assert manager.restore_latest() == 10
    np.testing.assert_array_equal(variable.numpy(), np.full(20_000, 10.0))  # nothing half-restored
    assert len(lines) == 3 and all(line.startswith("warning: skipping checkpoint ") for line in lines)
    assert "ckpt-000000040 is unreadable (" in lines[0]
    assert "ckpt-000000030 is unreadable (" in lines[1] and "Checksum does not match" in lines[1]
    assert "ckpt-000000020 is incomplete (no ckpt.index)" in lines[2]
    # The resumed run's next save replaces/deletes the abandoned newer checkpoints.
    manager.save(20)
    assert sorted(os.listdir(manager.directory)) == ["ckpt-000000010", "ckpt-000000020"]
    variable.assign(np.zeros(20_000))
    assert manager.restore_latest() == 20 and len(lines) == 3


def test_no_usable_checkpoint_is_one_error_listing_each(tmp_path):
    manager, _ = _big_manager(tmp_path, lambda line: None)
    manager.save(10)
    manager.save(20)
    _damage(manager, 10, "flip")
    _damage(manager, 20, "truncate")
    with pytest.raises(NoUsableCheckpointError) as error:
        manager.restore_latest()
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"no usable checkpoint in {manager.directory}: ")
    assert "ckpt-000000020 is unreadable" in message and "ckpt-000000010 is unreadable" in message


def test_best_bookkeeping_survives_damage(tmp_path):
    lines = []
    manager, variable = _big_manager(tmp_path, lines.append)
    manager.save_best(10, 50.0)
    manager.save_best(20, 60.0)
    assert manager.best_info()["step"] == 20
    # An unreadable best.json: that best is ignored, and pruned by the next save.
    with open(os.path.join(manager.directory, "best-000000020", "best.json"), "w") as f:
        f.write('{"step": 2')
    assert manager.best_info() is None
    manager.save_best(30, 40.0)
    assert manager.best_info()["step"] == 30
    assert sorted(n for n in os.listdir(manager.directory) if n.startswith("best-")) == ["best-000000030"]
    # Damaged best data: dropped with a warning, so the next evaluation saves a new one.
    data = os.path.join(manager.directory, "best-000000030", "ckpt.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(100)
    assert "best-000000030 is unreadable" in manager.drop_damaged_best()
    assert manager.best_info() is None and lines[-1].startswith("warning: dropping the best checkpoint ")
    assert manager.drop_damaged_best() is None


def test_disk_full_while_saving_keeps_the_last_good_checkpoint(tmp_path):
    manager, variable = _big_manager(tmp_path, print)
    variable.assign(np.full(20_000, 1.0))
    manager.save(10)
    variable.assign(np.full(20_000, 2.0))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # below the 160 kB data file
    try:
        with pytest.raises(DiskFullError) as error:
            manager.save(20)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(error.value).startswith(f"writing {manager.directory}/ckpt-000000020 failed: File too large")
    assert os.listdir(manager.directory) == ["ckpt-000000010"]  # no temporary directory left
    variable.assign(np.zeros(20_000))
    assert manager.restore_latest() == 10
    np.testing.assert_array_equal(variable.numpy(), np.full(20_000, 1.0))


def test_prune_on_resume_restores_the_retention(tmp_path):
    """A run killed between a save and its pruning left one checkpoint too many."""
    manager, _, _ = _manager(tmp_path, max_to_keep=3)
    for step in (10, 20, 30):
        manager.save(step)
    resumed, _, _ = _manager(tmp_path, max_to_keep=2)
    resumed.prune(30)
    assert resumed.checkpoint_steps() == [20, 30]
    resumed.prune(20)  # resumed from 20: 30 was skipped as damaged, abandoned
    assert resumed.checkpoint_steps() == [20]
