"""The committed CPU study: summarize.py lists every committed run with the numbers of its results.json."""

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

STUDY = REPO_ROOT / "docs" / "studies" / "cifar10_lt_cpu"


def test_summary_table_has_one_row_per_committed_run_with_its_median():
    completed = subprocess.run([sys.executable, str(STUDY / "summarize.py")], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    rows = [line.split(" | ") for line in completed.stdout.splitlines()[2:]]
    runs = sorted(STUDY.glob("*/*_seed*/results.json"))
    assert len(rows) == len(runs) >= 10  # 2 settings x (FixMatch, DASO) + Supervised, seeds 0 and 1
    by_run = {(row[0].strip("| "), row[1], int(row[2])): row for row in rows}
    for path in runs:
        learner, seed = path.parent.name.rsplit("_seed", 1)
        results = json.loads(path.read_text())
        row = by_run[(path.parent.parent.name, learner, int(seed))]
        assert row[3].split()[0] == str(results["step"])
        assert row[4].startswith(f"{results['test_top1_median4']:.1f} ")
