"""bench.profile_step traces a few tiny train steps and summarises the top ops."""

import json
import os
import subprocess
import sys

import pytest

from bench import profile_step
from tests.conftest import REPO_ROOT


def test_command_traces_and_summarizes(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "bench.profile_step", "--depth", "10", "--width", "1", "--batch", "2",
               "--ratio", "1", "--steps", "2", "--warmup", "1", "--top", "5", "--trace_dir", str(tmp_path)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    host = result["host"]
    assert result["steps"] == 2 and result["wall_ms"] > 0 and host["ops"] > 50
    assert 0 < host["busy_ms"] <= host["op_ms"] + 1e-6 and host["idle_ms"] == pytest.approx(
        result["wall_ms"] - host["busy_ms"], abs=0.02)
    top = result["top_ops"]
    assert len(top) == 5 and sum(op["share"] for op in top) <= 1.0
    assert [op["ms"] for op in top] == sorted((op["ms"] for op in top), reverse=True)
    assert any("Conv2D" in op["op"] for op in top)  # the convolutions lead even at this size
    # The kept trace summarises to the same op counts on its own.
    again = profile_step.summarize(str(tmp_path), steps=2, top=5)
    assert again["host"]["ops"] == host["ops"] and again["top_ops"] == top


def test_bad_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        profile_step.parse_args(["--steps", "3", "--steps_per_execution", "2"])
    assert "multiple of --steps_per_execution" in capsys.readouterr().err
