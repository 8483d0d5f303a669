"""run.py under faults: damaged checkpoints, a second process, a full disk, a damaged results.json.

Each test starts from a copy of the session's uninterrupted reference run (conftest.py),
damages or constrains it, re-runs the same command and compares with the reference: the
final state must be bit-identical and the evaluation record equal.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from tests.e2e.runs import (EXPERIMENT, REPO_ROOT, assert_same_run, assert_same_state, checkpoint_dir,
                             error_lines, final_checkpoint, read_checkpoint, run_env, run_py, run_record, tree_digest)

EXIT_DISK_FULL = 75


def _copy(trained_run, tmp_path, drop_steps=()):
    """A copy of the reference run; ``drop_steps``: checkpoints removed (an earlier moment)."""
    model_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], model_dir)
    for step in drop_steps:
        shutil.rmtree(checkpoint_dir(model_dir, step))
    return model_dir


def _data_file(directory):
    return directory / "ckpt.data-00000-of-00001"


def test_damaged_newest_checkpoints_resume_from_an_older_one(tmp_path, trained_run, overrides):
    model_dir = _copy(trained_run, tmp_path)
    checkpoints = model_dir / "checkpoints"
    with open(_data_file(checkpoint_dir(model_dir, 8)), "r+b") as f:
        f.truncate(1000)  # truncated newest
    data = bytearray(_data_file(checkpoint_dir(model_dir, 6)).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the next one
    _data_file(checkpoint_dir(model_dir, 6)).write_bytes(bytes(data))
    with open(_data_file(checkpoints / "best-000000004"), "r+b") as f:
        f.truncate(1000)  # and a damaged best checkpoint

    result = run_py(model_dir, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, result.stdout[-3000:]
    assert warnings[0].startswith(f"warning: skipping checkpoint {checkpoint_dir(model_dir, 8)} is unreadable (")
    assert warnings[1].startswith(f"warning: skipping checkpoint {checkpoint_dir(model_dir, 6)} is unreadable (")
    assert "Checksum does not match" in warnings[1]
    assert warnings[2].startswith(f"warning: dropping the best checkpoint {checkpoints}/best-000000004 is unreadable")
    assert "resuming from step 4" in result.stdout

    # Identical to the uninterrupted run, but for the best checkpoint: the damaged one is
    # lost, the next evaluation (step 8) made a new one.
    reference, record = run_record(trained_run[0]), run_record(model_dir)
    assert record["history"] == reference["history"]
    assert record["best"] == [{"step": 8, "valid_top1": reference["history"][-1]["valid"]["top1"]}]
    assert record["checkpoints"] == ["best-000000008", "ckpt-000000004", "ckpt-000000006", "ckpt-000000008"]
    assert_same_state(read_checkpoint(final_checkpoint(model_dir)), read_checkpoint(final_checkpoint(trained_run[0])),
                      atol=0.0)


def test_no_usable_checkpoint_is_one_line_and_writes_nothing(tmp_path, trained_run, overrides):
    model_dir = _copy(trained_run, tmp_path)
    for step in (4, 6, 8):
        with open(_data_file(checkpoint_dir(model_dir, step)), "r+b") as f:
            f.truncate(500)
    before = tree_digest(model_dir)
    result = run_py(model_dir, overrides)
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert line.startswith(f"run.py: error: no usable checkpoint in {model_dir}/checkpoints: checkpoint ")
    assert all(f"ckpt-00000000{step} is unreadable" in line for step in (4, 6, 8))
    assert tree_digest(model_dir) == before


def test_unreadable_results_json_stops_the_resume(tmp_path, trained_run, overrides):
    model_dir = _copy(trained_run, tmp_path, drop_steps=(8,))
    (model_dir / "results.json").write_text('{"history": [{"step": 4, "valid"')  # damaged by hand
    before = tree_digest(model_dir)
    result = run_py(model_dir, overrides)
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert line.startswith(f"run.py: error: {model_dir}/results.json is unreadable (")
    assert tree_digest(model_dir) == before  # the median history is not reset


def test_second_process_is_refused_and_the_first_unaffected(tmp_path, trained_run, overrides):
    model_dir = tmp_path / "run"
    command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={EXPERIMENT}", f"--model_dir={model_dir}",
               f"--params_override={overrides}"]
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 180
        while not ((model_dir / "run.lock").exists() and (model_dir / "run.lock").read_text()):
            assert first.poll() is None and time.time() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # paused while holding the lock: it cannot finish meanwhile
        try:
            second = run_py(model_dir, overrides)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2
    [line] = error_lines(second.stderr)
    assert line.startswith(f"run.py: error: --model_dir={model_dir} is in use by another run: pid {first.pid} on host ")
    assert first.returncode == 0, stderr[-3000:]
    assert_same_run(model_dir, trained_run[0])


def _limit_file_size(limit):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return preexec


def _run_limited(model_dir, overrides, limit):
    command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={EXPERIMENT}", f"--model_dir={model_dir}",
               f"--params_override={overrides}"]
    return subprocess.run(command, cwd=REPO_ROOT, env=run_env(), capture_output=True, text=True, timeout=240,
                          preexec_fn=_limit_file_size(limit))


def test_disk_full_stops_with_one_line_and_resumes_exactly(tmp_path, trained_run, overrides):
    # Resume from step 4 with a 1 MiB file-size limit: the step-6 checkpoint (1.9 MB) cannot be written.
    model_dir = _copy(trained_run, tmp_path, drop_steps=(6, 8))
    good = {p.name: p.read_bytes() for p in checkpoint_dir(model_dir, 4).iterdir()}
    result = _run_limited(model_dir, overrides, 1024 * 1024)
    assert result.returncode == EXIT_DISK_FULL, result.stderr[-3000:]
    [line] = error_lines(result.stderr)
    assert line.startswith(
        f"run.py: error: disk full: writing {checkpoint_dir(model_dir, 6)} failed (File too large (the process's "
        "file-size limit, ulimit -f, is 1.0 MiB)); the last good checkpoint, "
        f"{checkpoint_dir(model_dir, 4)} (step 4), is intact; a checkpoint needs about 1.8 MiB and ")
    assert line.endswith("Free some space and re-run the same command: the run resumes from its last checkpoint")
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == ["best-000000004", "ckpt-000000004"]
    assert {p.name: p.read_bytes() for p in checkpoint_dir(model_dir, 4).iterdir()} == good

    result = run_py(model_dir, overrides)  # space freed (no limit): the same command resumes
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from step 4" in result.stdout
    assert_same_run(model_dir, trained_run[0])


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4.5 MiB tmpfs (needs root and mount permission; skipped where that is missing)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4608k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_real_enospc_on_a_small_filesystem(small_tmpfs, trained_run, overrides):
    """The same on a full filesystem (ENOSPC): step-4 checkpoint + best (3.7 MB) fit, step 6 does not."""
    model_dir = small_tmpfs / "run"
    shutil.copytree(trained_run[0], model_dir,
                    ignore=lambda d, names: [n for n in names if n in ("ckpt-000000006", "ckpt-000000008")])
    result = run_py(model_dir, overrides)
    assert result.returncode == EXIT_DISK_FULL, result.stderr[-3000:]
    [line] = error_lines(result.stderr)
    assert "(No space left on device); the last good checkpoint, " in line and "(step 4), is intact" in line
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == ["best-000000004", "ckpt-000000004"]
    # results.json was rewritten (complete) at step 6 just before the checkpoint that failed.
    results, reference = (json.loads((d / "results.json").read_text()) for d in (model_dir, trained_run[0]))
    assert (results["step"], results["finished"]) == (6, False)
    assert results["history"] == [e for e in reference["history"] if e["step"] <= 4]
