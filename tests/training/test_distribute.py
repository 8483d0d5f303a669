"""daso_tf.training.distribute: decisions shared by every worker of a multi-worker run."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import free_ports

# Each worker passes its own flag; every worker must come back with the chief's (worker 0's).
DECIDE = """
import json, os
import tensorflow as tf
from daso_tf.training.distribute import chief_decides
strategy = tf.distribute.MultiWorkerMirroredStrategy()
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
print(json.dumps([chief_decides(strategy, flag) for flag in (index == 0, index == 1, True, False)]))
"""


@pytest.mark.slow  # two TensorFlow processes forming a cluster: ~35 s on 2 cores
def test_chief_decides_for_every_worker():
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = dict(os.environ, TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT))
        processes.append(subprocess.Popen([sys.executable, "-c", DECIDE], cwd=REPO_ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=180) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    # Worker 1 alone says "yes" in the second call and is overruled: no worker saves, no hang.
    assert [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs] == [[True, False, True, False]] * 2


def test_chief_task_from_tf_config(monkeypatch):
    from daso_tf.config import RuntimeConfig
    from daso_tf.training.distribute import is_chief_task

    multi = RuntimeConfig(distribution_strategy="multi_worker_mirrored")
    cases = [({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}}, True),
             ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}}, False),
             ({"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "worker", "index": 0}}, False),
             ({"cluster": {"chief": ["c"], "worker": ["a"]}, "task": {"type": "chief", "index": 0}}, True)]
    for tf_config, chief in cases:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
        assert is_chief_task(multi) is chief
        assert is_chief_task(RuntimeConfig()) is True  # one process: always the chief
