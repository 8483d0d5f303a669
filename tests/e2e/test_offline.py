"""run.py offline: the default command with TFDS data that is not prepared stops within a
minute with one `run.py: error:` line (exit 2) naming the dataset, the data_dir looked in and
the image-folder alternative, and writes nothing.

"Offline" is simulated inside the run.py process by replacing socket.getaddrinfo (DNS) before
run.py starts, so no test reaches the real network: once with a resolver that never answers
(the worst case: the download probe must give up on its own timeout), once with one that
fails at once.
"""

import os
import pathlib
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

OFFLINE_RUN_PY = r"""
import runpy, socket, sys, threading

def hanging_lookup(*args, **kwargs):
    threading.Event().wait()

def failing_lookup(*args, **kwargs):
    raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

socket.getaddrinfo = hanging_lookup if sys.argv[1] == "hang" else failing_lookup
run_py = sys.argv[2]
sys.argv = [run_py] + sys.argv[3:]
runpy.run_path(run_py, run_name="__main__")
"""


def run_offline(dns, cwd, tfds_dir, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT), TFDS_DATA_DIR=str(tfds_dir))
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", OFFLINE_RUN_PY, dns, str(REPO_ROOT / "run.py"), *args],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - start


def error_line(result):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("run.py: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_default_command_with_a_silent_resolver_stops_within_a_minute(tmp_path):
    tfds_dir = tmp_path / "tensorflow_datasets"  # nothing prepared there
    result, seconds = run_offline("hang", tmp_path, tfds_dir, "--experiment=cifar10_lt_n1500")
    assert seconds < 60
    line = error_line(result)
    assert line.startswith("run.py: error: data.dataset=cifar10: TFDS dataset 'cifar10' is not prepared in "
                           f"the TFDS data_dir {tfds_dir}")
    assert "www.cs.toronto.edu:443 cannot be reached: no answer within 10 s" in line
    assert "--params_override=data.source=folder,data.data_dir=" in line
    assert not (tmp_path / "runs").exists()  # the default --model_dir was not created
    assert not tfds_dir.exists()


@pytest.mark.parametrize("experiment, dataset, host", [("stl10_lt_n450_g10", "stl10", "ai.stanford.edu:80")])
def test_stl10_offline_names_its_dataset_and_download_host(tmp_path, experiment, dataset, host):
    model_dir = tmp_path / "run"
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    result, _ = run_offline("fail", tmp_path, tmp_path / "unused", f"--experiment={experiment}",
                            f"--model_dir={model_dir}", f"--params_override=data.data_dir={data_dir}")
    line = error_line(result)
    assert f"TFDS dataset '{dataset}' is not prepared in the TFDS data_dir {data_dir}" in line
    assert f"{host} cannot be reached: Temporary failure in name resolution" in line
    assert not model_dir.exists()
    assert list(data_dir.iterdir()) == []
