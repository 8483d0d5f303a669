"""daso_tf.io_utils: durable atomic writes, directory moves, disk-full detection."""

import errno
import json
import os
import pathlib
import re
import resource
import subprocess
import sys

import numpy as np
import pytest

from daso_tf import io_utils
from tests.conftest import REPO_ROOT


@pytest.fixture
def fsync_log(monkeypatch):
    """Records what was fsync'ed, by path."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_write_atomic_syncs_file_then_directory(tmp_path, fsync_log):
    target = tmp_path / "results.json"
    target.write_text("old")
    io_utils.write_json(target, {"step": np.int64(4), "top1": np.float32(0.5), "per_class": np.arange(2)})
    assert json.loads(target.read_text()) == {"step": 4, "top1": 0.5, "per_class": [0, 1]}
    # The temporary file is fsync'ed before the rename, the directory after it.
    assert re.fullmatch(rf"{tmp_path}/\.tmp-write-results\.json-{os.getpid()}-\w+", fsync_log[0])
    assert fsync_log[1:] == [str(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "params.yaml"
    target.write_text("old: 1\n")

    def fail(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="Input/output error") as error:
        io_utils.write_atomic(target, "new: 2\n")
    assert not isinstance(error.value, io_utils.DiskFullError)
    assert target.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_disk_full_is_one_error_naming_the_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    real_open = open

    class FullFile:
        def __init__(self, path, mode):
            self.file = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", lambda path, mode="r", *a, **k: FullFile(path, mode))
    with pytest.raises(io_utils.DiskFullError) as error:
        io_utils.write_atomic(target, "{}")
    assert str(error.value) == f"writing {target} failed: No space left on device"
    assert error.value.path == str(target) and list(tmp_path.iterdir()) == []


def test_file_size_limit_counts_as_disk_full(tmp_path):
    """RLIMIT_FSIZE makes write() fail with EFBIG (Python ignores SIGXFSZ)."""
    target = tmp_path / "big.bin"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(io_utils.DiskFullError) as error:
            io_utils.write_atomic(target, b"x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert "File too large (the process's file-size limit, ulimit -f, is 64.0 KiB)" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_is_disk_full_reads_tensorflow_messages():
    class OutOfRangeError(Exception):  # what TensorFlow raises: no errno, the reason in the text
        pass

    assert io_utils.is_disk_full(OutOfRangeError("/x/ckpt_temp/part-0.data; File too large [Op:SaveV2]"))
    assert io_utils.is_disk_full(RuntimeError("events file: No space left on device"))
    assert io_utils.is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert not io_utils.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not io_utils.is_disk_full(ValueError("bad value"))


def test_move_into_place_replaces_or_refuses(tmp_path, fsync_log):
    def tree(name, content):
        path = tmp_path / name
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "file").write_text(content)
        return path

    final = tmp_path / "ckpt-000000002"
    io_utils.move_into_place(tree(".tmp-a", "first"), final)
    assert (final / "sub" / "file").read_text() == "first"
    assert f"{tmp_path}/.tmp-a/sub/file" in fsync_log and fsync_log[-1] == str(tmp_path)

    with pytest.raises(FileExistsError):
        io_utils.move_into_place(tree(".tmp-b", "second"), final)
    assert (final / "sub" / "file").read_text() == "first"
    io_utils.move_into_place(tmp_path / ".tmp-b", final, replace=True)
    assert (final / "sub" / "file").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000002"]


def test_remove_tree_hides_the_directory_first(tmp_path, monkeypatch):
    victim = tmp_path / "ckpt-000000002"
    (victim / "a").mkdir(parents=True)
    seen = []
    monkeypatch.setattr(io_utils.shutil, "rmtree", lambda path, **kwargs: seen.append(os.path.basename(path)))
    io_utils.remove_tree(victim)  # "killed" during rmtree: only a hidden .tmp- name remains
    assert not victim.exists() and seen[0].startswith(".tmp-trash-ckpt-000000002-")
    assert [p.name for p in tmp_path.iterdir()] == seen


def test_leftovers_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    names = {
        f".tmp-write-results.json-{dead_pid}-0123abcd": "file",      # killed: removed
        f".tmp-ckpt-000000004-{dead_pid}-0123abcd": "dir",           # killed: removed
        f".tmp-write-params.yaml-{os.getpid()}-0123abcd": "file",    # this process: kept
        f".tmp-write-eval_results.json-{os.getppid()}-0123abcd": "file",  # a live process: kept
        ".tmp-unparsable": "file", "results.json": "file",
    }
    for name, kind in names.items():
        (tmp_path / name).mkdir() if kind == "dir" else (tmp_path / name).write_text("x")
    removed = io_utils.remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(list(names)[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(list(names)[2:])


def test_one_atomic_write_implementation():
    """Every rename and file write of the package goes through io_utils."""
    offenders = []
    for path in sorted(pathlib.Path(REPO_ROOT).glob("**/*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative.startswith(("tests/", "bench/", "examples/")) or relative == "daso_tf/io_utils.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"os\.(replace|rename)\(|\.write_(text|bytes)\(|json\.dump\(", line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
