"""bench.train_step runs as a command and reports consistent numbers (tiny settings)."""

import json
import os
import statistics
import subprocess
import sys

import keras
import pytest

from bench import train_step
from tests.conftest import REPO_ROOT

TINY = ["--depth", "10", "--width", "1", "--batch", "4", "--ratio", "2", "--steps", "2",
        "--warmup", "1", "--data", "random", "--input_batches", "3"]
TIMING_KEYS = {"seconds_per_step_median", "steps_per_second", "images_per_second", "seconds_per_step",
               "last_logs"}


def check_timing(timing, calls, images_per_step):
    """One per-step time per timed call (call time / steps_per_execution); median and rates."""
    assert set(timing) == TIMING_KEYS
    assert len(timing["seconds_per_step"]) == calls and min(timing["seconds_per_step"]) > 0
    assert timing["seconds_per_step_median"] == pytest.approx(statistics.median(timing["seconds_per_step"]),
                                                              abs=2e-5)
    assert timing["images_per_second"] == pytest.approx(
        images_per_step / timing["seconds_per_step_median"], rel=1e-3)
    assert {"loss", "loss_x", "loss_u", "mask"} <= set(timing["last_logs"])


def test_command_prints_json_with_input_included_and_excluded():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run([sys.executable, "-m", "bench.train_step", *TINY, "--input", "both"],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["images_per_step"] == 4 * (1 + 2 * 2)  # B labeled + mu*B weak + mu*B strong
    assert (result["algorithm"], result["experiment"]) == ("daso", "cifar10_lt_n1500")
    for key in ("input_excluded", "input_included"):
        check_timing(result[key], 2, result["images_per_step"])
    assert result["device_type"] in ("CPU", "GPU") and result["device"]
    assert result["peak_host_memory_mib"] > 100  # TensorFlow alone takes more
    if result["device_type"] == "CPU":
        assert result["peak_device_memory_mib"] is None
        assert result["seconds_per_step_over_reference"] == pytest.approx(
            result["input_included"]["seconds_per_step_median"] / 2.7, abs=1e-3)
    assert result["input_pipeline_images_per_second"] > 0
    assert result["input_pipeline_over_train_step"] == pytest.approx(
        result["input_pipeline_images_per_second"] / result["input_included"]["images_per_second"], rel=1e-2,
        abs=6e-3)  # reported with 2 decimals
    assert len(result["load_average_start"]) == 3
    # Timed in DASO's active phase (warm-up 0): the alignment loss is on.
    assert result["daso_warmup_steps"] == 0 and result["input_included"]["last_logs"]["loss_align"] > 0
    graph = result["graph"]
    assert graph["train_step_ops"] >= sum(graph["op_types"].values()) > 0
    # Grouped EMA/optimiser updates and fused BatchNorm: 1,522 ops for this WRN-10-1 DASO step
    # (2,263 with BatchNorm op by op in training; 2,551 with an update chain per variable too).
    assert graph["train_step_ops"] < 1650 and graph["op_types"]["ReadVariableOp"] < 300
    assert "xla_clusters_per_step" not in graph


def test_fast_paths_run_in_process():
    try:
        result = train_step.main(TINY + ["--input", "synthetic", "--precision", "mixed_bfloat16",
                                         "--jit_compile", "1", "--steps_per_execution", "2",
                                         "--algorithm", "fixmatch", "--input_batches", "0",
                                         "--augment_on_device", "1"])
    finally:
        keras.config.set_dtype_policy("float32")
    assert (result["precision"], result["jit_compile"], result["steps_per_execution"],
            result["augment_on_device"]) == ("mixed_bfloat16", True, 2, True)
    assert result["algorithm"] == "fixmatch" and result["input_included"] is None
    check_timing(result["input_excluded"], 1, 20)  # 2 steps = one call of steps_per_execution=2
    assert result["input_pipeline_images_per_second"] is None
    # The whole step (augmentation, EMA, optimiser) is one XLA cluster.
    assert result["graph"]["xla_clusters_per_step"] == 1 and result["graph"]["hlo_instructions"] > 1000


@pytest.mark.parametrize("argv, message", [
    (["--depth", "11"], "6n+4"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--precision", "float16"], "invalid choice"),
    (["--daso_warmup_steps", "-1"], "must be >= 0"),
])
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        train_step.parse_args(argv)
    assert error.value.code == 2
    assert message in capsys.readouterr().err
