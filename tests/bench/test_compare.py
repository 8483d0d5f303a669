"""bench.compare: alternation, summary arithmetic, argument checks, the old-layout shim, one real pair."""

import json
import subprocess
import sys

import pytest

from bench import compare
from tests.conftest import REPO_ROOT


def test_rounds_alternate_which_side_runs_first():
    assert compare.run_order(3) == [("base", "new"), ("new", "base"), ("base", "new")]


def _record(side, config, seconds, ops=100):
    return {"side": side, "config": config, "load_average": 1.0,
            "result": {"input_included": {"seconds_per_step_median": seconds}, "graph": {"train_step_ops": ops}}}


def test_summary_is_the_median_of_the_runs_and_their_ratio():
    records = [_record("base", "b4", s, 700) for s in (0.08, 0.07, 0.09)] + \
              [_record("new", "b4", s, 300) for s in (0.05, 0.06, 0.04)] + \
              [{"side": "new", "config": "b4", "load_average": 1.0, "result": {"error": "exit 1"}}]
    summary = compare.summarize(records)["b4"]
    assert summary["base"]["median"] == 0.08 and summary["new"]["median"] == 0.05  # errors left out
    assert summary["new_over_base"] == 0.625
    assert (summary["base"]["train_step_ops"], summary["new"]["train_step_ops"]) == (700, 300)
    assert "new_over_base" not in compare.summarize(records[:3])["b4"]  # one side only: no ratio


@pytest.mark.parametrize("argv, message", [
    (["--configs", "b4,b5"], "unknown"),
    (["--rounds", "0"], "--rounds"),
    (["--new", "/nonexistent"], "--new=/nonexistent: no daso_tf"),
])
def test_bad_arguments_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        compare.parse_args(["--base", str(REPO_ROOT), *argv])
    assert message in capsys.readouterr().err


def test_a_base_with_the_registry_at_the_top_level_is_aliased(tmp_path):
    # Checkouts before the packaged registry kept it at experiments/registry.py.
    (tmp_path / "daso_tf").mkdir()
    (tmp_path / "daso_tf" / "__init__.py").write_text("")
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "registry.py").write_text("MARK = 'old layout'\n")
    probe = compare.CHILD_SETUP + "import daso_tf.experiments.registry as r; print(r.MARK, daso_tf.__file__)"
    completed = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "none"), str(tmp_path)],
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["old", "layout", str(tmp_path / "daso_tf" / "__init__.py")]


@pytest.mark.slow
def test_one_real_pair_of_tiny_runs(tmp_path):
    out = tmp_path / "ab.jsonl"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--base", str(REPO_ROOT), "--configs", "b4", "--rounds", "1",
         "--out", str(out), "--extra", "--depth 10 --batch 2 --steps 2 --warmup 1 --data random"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["side"] for line in lines] == ["base", "new"]
    assert all(line["result"]["depth"] == 10 and line["result"]["batch"] == 2 for line in lines)
    summary = json.loads(completed.stdout)["b4"]
    assert summary["new_over_base"] == pytest.approx(summary["new"]["median"] / summary["base"]["median"], abs=1e-3)
