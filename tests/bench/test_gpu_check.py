"""bench.gpu_check: the one-shot GPU check, run as a command in its --smoke form (CPU, tiny)."""

import json
import os
import subprocess
import sys

import pytest

from bench import gpu_check
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_smoke_prints_throughput_rows_and_a_trained_run(tmp_path, cifar10_zip):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", DASO_TF_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "gpu_check.json"
    completed = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(out),
                                "--report_dir", str(tmp_path / "report")],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert json.loads(out.read_text()) == result  # the file holds the final JSON too
    assert result["smoke"] is True and result["device_type"] in ("CPU", "GPU") and result["device"]
    rows = result["throughput"]
    assert [(r["precision"], r["jit_compile"], r["augment_on_device"], r["steps_per_execution"]) for r in rows] == [
        ("float32", False, False, 1), ("float32", False, True, 2)]
    assert result["skipped"] == []
    for row in rows:
        assert "error" not in row, row
        assert row["images_per_step"] == 4 * (1 + 2 * 2)  # B labeled + mu*B weak + mu*B strong
        assert row["steps_per_second"] == pytest.approx(1 / row["seconds_per_step_median"], rel=1e-3)
        assert row["images_per_second"] == pytest.approx(20 * row["steps_per_second"], rel=1e-3)
        assert row["wall_s"] > 0
    fastest = max(rows, key=lambda r: r["steps_per_second"])
    assert result["fastest"]["steps_per_second"] == fastest["steps_per_second"]

    training = result["training"]
    assert "error" not in training, training
    # The run used the fastest configuration's runtime settings, through run.py.
    assert training["settings"] == {key: fastest[key] for key in gpu_check.GRID_KEYS}
    assert (training["train_steps"], training["steps_done"], training["finished"]) == (4, 4, True)
    assert training["evaluations"] == 2  # every 2 steps
    assert 0.0 <= training["test_top1"] <= 100.0 and 0.0 <= training["test_top1_median"] <= 100.0
    assert os.path.isfile(training["report"])
    if result["device_type"] == "CPU":
        assert result["peak_device_memory_mib"] is None


def test_an_exhausted_budget_skips_and_says_so(capsys):
    result = gpu_check.main(["--smoke", "--budget_s", "5", "--train_reserve_s", "0"])
    assert result["throughput"] == [] and result["training"] == {"skipped": "time budget"}
    assert [(s["precision"], s["jit_compile"], s["augment_on_device"], s["steps_per_execution"], s["reason"])
            for s in result["skipped"]] == [("float32", 0, 0, 1, "time budget"), ("float32", 0, 1, 2, "time budget")]
    assert json.loads(capsys.readouterr().out) == result


def test_full_grid_covers_every_combination_once_most_informative_first():
    configurations = gpu_check.grid(smoke=False)
    assert len(configurations) == len(set(configurations)) == 2 * 2 * 2 * 2
    assert configurations[0] == ("float32", 0, 0, 1)  # the baseline first
    assert configurations[:5] == gpu_check.PRIORITY[:5]


@pytest.mark.parametrize("time_left, steps, why", [
    (420.0, 3000, "as asked"),  # (420 - 120) s x 10 steps/s = 3000 steps fit
    (300.0, 1500, "reduced from 3000: 10.00 steps/s measured, 300 s left"),  # 1800 fit -> multiple of 500
    (130.0, 500, "reduced from 3000: 10.00 steps/s measured, 130 s left"),  # at least one evaluation interval
])
def test_training_steps_fit_the_time_left(time_left, steps, why):
    args = gpu_check.parse_args([])
    assert gpu_check.training_plan(args, {"steps_per_second": 10.0}, time_left) == (steps, why)
    assert gpu_check.training_plan(args, None, time_left) == (3000, "as asked")  # nothing measured


@pytest.mark.parametrize("argv, message", [
    (["--budget_s", "0"], "--budget_s must be > 0"),
    (["--steps", "-1"], "--steps must be > 0"),
    (["--warmup", "-1"], "must be >= 0"),
])
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        gpu_check.parse_args(argv)
    assert error.value.code == 2 and message in capsys.readouterr().err
