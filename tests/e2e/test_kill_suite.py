"""Kill suite: SIGKILL the tiny run at many moments, re-run the same command, compare.

Each trial trains the tiny run (conftest.py) in a fresh directory and kills it: first at an
exact moment inside a write (``DASO_KILL_AT``, cycling through the points below), then at a
random time; then the same command runs to the end. The result must be bit-identical to
the uninterrupted reference run: model, EMA, optimiser, queue, histogram and step in the
final checkpoint, the evaluation history, training windows and medians in results.json, the
checkpoints kept and the best one. Every re-run after a kill that left the run directory locked must take
over the stale lock. Exports are killed the same way: no partial version may ever appear.

    DASO_KILL_SUITE_KILLS=60 python -m pytest -q -s tests/e2e/test_kill_suite.py

scales it (CI runs the default, 3); DASO_KILL_SUITE_SEED changes the random moments.
"""

import collections
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tests.e2e.runs import EXPERIMENT, REPO_ROOT, assert_same_run, run_env

KILLS = int(os.environ.get("DASO_KILL_SUITE_KILLS", "3"))
SEED = int(os.environ.get("DASO_KILL_SUITE_SEED", "0"))
# Moments inside writes, as "<point>@<occurrence>" in a fresh run of 8 steps that saves at
# steps 2, 4, 6, 8, evaluates at 4 and 8 (best at 4) and writes results.json 5 times (before
# each checkpoint, then at the end).
KILL_POINTS = [
    "checkpoint:before_rename@2",   # step-4 checkpoint complete in its temporary directory
    "best:before_cleanup@1",        # new best renamed, the previous one not yet removed
    "checkpoint:before_prune@4",    # final checkpoint renamed, the oldest not yet pruned
    "write:results.json@2",         # results.json written and fsync'ed, not yet renamed
    "best:before_rename@1",
    "checkpoint:before_rename@4",   # the last checkpoint
    "write:params.yaml@1",
    "checkpoint:before_prune@3",
    "write:results.json@5",         # the final rewrite (finished: true)
    "checkpoint:before_rename@1",
]
EXPORT_POINT = "export:before_rename"


def _start(arguments, log_path, kill_at=None):
    env = run_env(**({"DASO_KILL_AT": kill_at} if kill_at else {}))
    command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={EXPERIMENT}", *arguments]
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


def _finish(process, delay=None):
    """Waits for ``process`` (SIGKILLs it after ``delay`` seconds); returns its exit status."""
    try:
        process.wait(timeout=delay if delay is not None else 300)
    except subprocess.TimeoutExpired:
        if delay is None:
            process.kill()
            raise
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode


KILLED = -signal.SIGKILL


class KillLog:
    """What happened, for the failure message and the summary line."""

    def __init__(self):
        self.events, self.kills, self.identical = [], 0, 0
        self.kinds = collections.Counter()  # kill point / random moment reached / stale-lock takeovers

    def add(self, text):
        self.events.append(text)

    def __str__(self):
        return f"seed {SEED}; " + "; ".join(self.events[-12:])


def _stale_lock(model_dir):
    lock = model_dir / "run.lock"
    return lock.exists() and lock.read_text().strip() != ""


def test_killed_runs_resume_identically(tmp_path, trained_run, overrides):
    reference_dir, _ = trained_run
    rng = random.Random(SEED)
    log = KillLog()
    longest_run_s = 15.0  # random kills land in [0, longest run seen]
    trial = 0
    while log.kills < KILLS:
        model_dir = tmp_path / f"trial{trial}"
        arguments = [f"--model_dir={model_dir}", f"--params_override={overrides}"]
        plan = [KILL_POINTS[trial % len(KILL_POINTS)], "random"][:KILLS - log.kills] + [None]
        trial_kills, stale = 0, False
        for attempt, kill in enumerate(plan):
            output = tmp_path / f"trial{trial}-{attempt}.log"
            started = time.perf_counter()
            if kill in (None, "random"):
                delay = None if kill is None else rng.uniform(0.0, longest_run_s)
                status = _finish(_start(arguments, output), delay)
                what = "to the end" if kill is None else f"killed after {delay:.1f}s" if status == KILLED else "ended"
            else:
                status = _finish(_start(arguments, output, kill_at=kill))
                assert status == KILLED, f"{kill} was never reached: {output.read_text()[-2000:]}"
                what = f"killed at {kill}"
            text = output.read_text()
            log.add(f"trial {trial} run {attempt}: {what}")
            killed = status == KILLED
            log.kinds["stale-lock takeovers"] += "taking over the stale lock" in text
            if killed:
                log.kinds[_moment(kill, text)] += 1
                trial_kills += 1
                stale = _stale_lock(model_dir)  # the killed run (or an earlier one) left its record
                continue
            assert status == 0, f"{log}\n{text[-3000:]}"
            if stale:
                assert "taking over the stale lock" in text, f"{log}\n{text[-2000:]}"
            longest_run_s = max(longest_run_s, time.perf_counter() - started)
            break
        try:
            assert_same_run(model_dir, reference_dir)
        except AssertionError as error:
            raise AssertionError(f"{log}: {error}") from None
        log.kills += trial_kills
        log.identical += trial_kills
        trial += 1
    print(f"\nkill suite: {log.kills} kills, {log.identical} identical resumes ({trial} trials, seed {SEED}); "
          + ", ".join(f"{count} {kind}" for kind, count in sorted(log.kinds.items())))


def _moment(kill_point, output):
    """Where a kill landed, for the summary."""
    if kill_point != "random":
        return "at kill points"
    if "checkpoint saved:" in output or "eval step" in output or "step " in output.split("=" * 78)[-1]:
        return "random, while training"
    return "random, during start-up" if "=" * 78 not in output else "random, before the first step"


def _export(model_dir, export_dir, log_path, kill_at=None):
    return _start([f"--model_dir={model_dir}", "--mode=export", f"--export_dir={export_dir}"], log_path, kill_at)


def _versions(export_dir):
    model_dir = export_dir / EXPERIMENT
    return sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) if model_dir.exists() else []


def test_killed_exports_never_leave_a_partial_version(tmp_path, trained_run):
    import tensorflow as tf

    model_dir, _ = trained_run  # export only reads the run directory
    export_dir = tmp_path / "serving"
    rng = random.Random(SEED)
    kills = 0
    for attempt in range(1 + KILLS // 10):  # one kill inside the write, then random ones
        output = tmp_path / f"export-{attempt}.log"
        if attempt == 0:
            assert _finish(_export(model_dir, export_dir, output, kill_at=EXPORT_POINT)) == KILLED, \
                output.read_text()[-2000:]
            kills += 1
            assert _versions(export_dir) == []  # written, fsync'ed, never renamed: no version
        else:
            kills += _finish(_export(model_dir, export_dir, output), rng.uniform(0.0, 12.0)) == KILLED
    assert _finish(_export(model_dir, export_dir, tmp_path / "export-last.log")) == 0
    images = tf.constant(np.random.default_rng(SEED).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    probabilities = []
    for version in _versions(export_dir):  # each one complete and the same model
        assert version.isdigit()
        loaded = tf.saved_model.load(str(export_dir / EXPERIMENT / version))
        probabilities.append(loaded.signatures["serving_default"](images=images)["probabilities"].numpy())
    assert probabilities and all(np.array_equal(p, probabilities[0]) for p in probabilities)
    assert f'name: "{EXPERIMENT}"' in (export_dir / "models.config").read_text()
    print(f"\nexport kills: {kills}, versions {_versions(export_dir)}")


@pytest.mark.parametrize("point", ["checkpoint:before_rename", "write:results.json@2"])
def test_kill_points_fire_only_when_asked(point):
    """The hook is inert without DASO_KILL_AT and kills exactly at the named occurrence."""
    script = ("from daso_tf.fault_injection import kill_point\n"
              "for i in range(3):\n"
              "    print(i, flush=True)\n"
              f"    kill_point({point.split('@')[0]!r})\n")
    for kill_at, returncode, printed in ((None, 0, "0\n1\n2\n"), (point, -signal.SIGKILL,
                                                                    "0\n1\n" if "@2" in point else "0\n")):
        env = run_env(**({"DASO_KILL_AT": kill_at} if kill_at else {}))
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert (done.returncode, done.stdout) == (returncode, printed)
