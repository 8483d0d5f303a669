"""daso_tf.training.run_lock: one writer per run directory, stale locks taken over."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from daso_tf.training import run_lock
from daso_tf.training.run_lock import LOCK_FILE, RunDirLock, RunDirLockedError
from tests.conftest import REPO_ROOT

HOLD_LOCK = """
import sys, time
from daso_tf.training.run_lock import RunDirLock
lock = RunDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _holder(tmp_path):
    """A separate process holding the lock of ``tmp_path`` (it sleeps until killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=REPO_ROOT,
                               env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_process_is_refused_naming_the_holder(tmp_path):
    process = _holder(tmp_path)
    try:
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record["pid"] == process.pid and record["host"] == socket.gethostname()
        start = time.perf_counter()
        with pytest.raises(RunDirLockedError) as error:
            RunDirLock(str(tmp_path)).acquire()
        assert time.perf_counter() - start < 1  # refused at once, no waiting
        message = str(error.value)
        assert "\n" not in message
        assert f"--model_dir={tmp_path} is in use by another run: pid {process.pid} on host " in message
        assert json.loads((tmp_path / LOCK_FILE).read_text()) == record  # the holder's record untouched
    finally:
        process.kill()
        process.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    process = _holder(tmp_path)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    lines = []
    with RunDirLock(str(tmp_path), log=lines.append) as lock:
        assert lock.held
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirLockedError, match=f"pid {os.getpid()}"):
            RunDirLock(str(tmp_path)).acquire()  # another open file description conflicts too
    assert lines == [f"taking over the stale lock {tmp_path}/{LOCK_FILE} of pid {process.pid} on host "
                     f"{socket.gethostname()} (since {lines[0].split('(since ')[1]}"]
    assert lines[0].endswith("), which is no longer running")
    # A clean release empties the record: the next run starts silently.
    assert (tmp_path / LOCK_FILE).read_text() == ""
    lines.clear()
    with RunDirLock(str(tmp_path), log=lines.append):
        pass
    assert lines == []


def test_without_file_locks_the_record_decides(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    _holder_record(tmp_path, pid=os.getpid())  # a live process of this host
    with pytest.raises(RunDirLockedError, match=f"pid {os.getpid()} on host"):
        RunDirLock(str(tmp_path)).acquire()
    _holder_record(tmp_path, pid=_dead_pid())
    lines = []
    with RunDirLock(str(tmp_path), log=lines.append):
        assert "which is no longer running" in lines[0]
    _holder_record(tmp_path, pid=1, host="another-host")  # cannot be checked from here: honoured
    with pytest.raises(RunDirLockedError, match="on host another-host"):
        RunDirLock(str(tmp_path)).acquire()


def _holder_record(directory, pid, host=None):
    record = {"host": host or socket.gethostname(), "pid": pid, "started": "2025-01-01T00:00:00+00:00"}
    (directory / LOCK_FILE).write_text(json.dumps(record))


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
