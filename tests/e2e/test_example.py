"""The README's user-code example runs end to end: fit, evaluate, .keras save/load, export."""

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_user_code_example_runs(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-m", "examples.user_code", "--steps", "6", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restored step 6" in done.stdout
    assert (tmp_path / "daso.keras").is_file()
    assert (tmp_path / "serving" / "my_daso" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "serving" / "models.config").is_file()
