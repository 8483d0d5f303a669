"""Every registered experiment, end to end through run.py's entry point, on fake TFDS data.

One subprocess (tests/e2e/mock_tfds_runs.py) runs every TFDS experiment (the paper's 16 and
ACR on its own protocol, 3) under ``tfds.testing.mock_data`` with each dataset's real
structure and per-class counts (tests/mock_tfds.py), each for 2 training steps of WRN-10-1
(DASO active from step 1) with evaluation on one small batch. The per-class counts each run prints in its start-up summary
must be the paper's (tests/paper_splits.py), and every run must finish with a checkpoint and
results.json.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import experiments
from tests.mock_tfds import FAKE_TFDS
from tests.paper_splits import PAPER_SPLITS, paper_split

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ",".join([
    "model.depth=10", "model.width=1", "data.labeled_batch_size=4",
    "trainer.train_steps=2", "trainer.eval_interval=2", "trainer.checkpoint_interval=2",
    "trainer.log_interval=1", "trainer.eval_batches=1", "trainer.eval_batch_size=16",
])
DASO_TINY = "algorithm.warmup_steps=1"  # only for DASO experiments (ACR does not take it)


# Experiments that read an image folder instead of TFDS; tests/e2e/test_run.py trains them
# through run.py on a folder of real JPEGs (cpu_experiment_runs).
FOLDER_EXPERIMENTS = {"cifar10_lt_n1500_cpu", "cifar10_lt_n1500_reversed_cpu"}


def test_every_registered_experiment_is_covered():
    names = experiments.list_experiments()
    tfds = sorted(name for name in names if experiments.get_experiment(name).data.source == "tfds")
    assert tfds == sorted(PAPER_SPLITS)
    assert sorted(set(names) - set(tfds)) == sorted(FOLDER_EXPERIMENTS)


@pytest.fixture(scope="module")
def mock_runs(tmp_path_factory):
    """(runs_dir, {experiment: (exit code, console output)}, stderr) of one process running
    every experiment."""
    runs_dir = tmp_path_factory.mktemp("mock_tfds_runs")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "e2e" / "mock_tfds_runs.py"), f"--runs_dir={runs_dir}",
         f"--params_override={TINY}", f"--daso_params_override={DASO_TINY}", *PAPER_SPLITS],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    sections = re.findall(r"^=== (\S+) ===\n(.*?)^=== exit (\d+) ===$", result.stdout, re.M | re.S)
    runs = {name: (int(code), text) for name, text, code in sections}
    assert sorted(runs) == sorted(PAPER_SPLITS), result.stdout[-3000:]
    return runs_dir, runs, result.stderr


def summary_table(text):
    """The per-class rows and the total row of a run's start-up summary, as lists of fields."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.split() == ["class", "labeled", "unlabeled", "valid", "test"])
    rows = []
    for line in lines[start + 1:]:
        rows.append(line.split())
        if rows[-1][0] == "total":
            return rows[:-1], rows[-1]
    raise AssertionError("the summary table has no total row")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_SPLITS))
def test_experiment_trains_two_steps_on_the_papers_split(mock_runs, name):
    runs_dir, runs, stderr = mock_runs
    code, text = runs[name]
    assert code == 0, f"{name} exited with {code}:\n{text[-2000:]}\n{stderr[-3000:]}"

    labeled, unlabeled, valid, test = paper_split(name)
    rows, total = summary_table(text)
    assert len(rows) == len(labeled)
    assert [int(row[1]) for row in rows] == labeled
    if unlabeled is None:  # STL-10: the whole extra split, labels unknown
        assert [row[2] for row in rows] == ["unknown"] * len(labeled)
        unlabeled_total = FAKE_TFDS["stl10"]["unlabelled"]
    else:
        assert [int(row[2]) for row in rows] == unlabeled
        unlabeled_total = sum(unlabeled)
    assert [int(row[3]) for row in rows] == valid
    assert [int(row[4]) for row in rows] == test
    assert [int(v) for v in total[1:]] == [sum(labeled), unlabeled_total, sum(valid), sum(test)]

    assert "step 2/2" in text and "eval step 2:" in text
    results = json.loads((runs_dir / name / "results.json").read_text())
    assert results["step"] == 2 and results["finished"] is True
    assert (runs_dir / name / "checkpoints" / "ckpt-000000002").is_dir()
