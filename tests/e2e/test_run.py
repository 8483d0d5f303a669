"""run.py end to end on a few hundred offline CIFAR-10 JPEGs (data.source=folder).

One tiny run (WRN-10-1, batch 4 + 2x4, 8 steps, float64 so that runs on different device
layouts can be compared tightly) is trained once per session (conftest.py) and reused: its
outputs are checked, it is the reference for the interrupted/resumed run and for the
mirrored run, and bad input is tried against it (without touching it).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from e2e_utils import (EXPERIMENT, REPO_ROOT, assert_same_state, final_checkpoint, read_checkpoint, run_env,
                       run_py, tree_digest)

from tests.helpers import free_ports


def test_run_leaves_params_tensorboard_checkpoints_results(trained_run):
    model_dir, result = trained_run
    import yaml

    params = yaml.safe_load((model_dir / "params.yaml").read_text())
    assert params["name"] == EXPERIMENT and params["trainer"]["train_steps"] == 8
    assert params["data"]["source"] == "folder" and params["model"]["depth"] == 10

    results = json.loads((model_dir / "results.json").read_text())
    assert results["finished"] is True and results["step"] == 8
    assert [e["step"] for e in results["history"]] == [4, 8]
    test_top1 = [e["test"]["top1"] for e in results["history"]]
    assert results["test_top1_median20"] == pytest.approx(float(np.median(test_top1)))
    assert len(results["per_class_accuracy"]["test"]) == 10
    assert results["config"]["data"]["num_labeled_head"] == 10 and results["wall_time_s"] > 0
    final = results["final"]["test"]
    assert 0.0 <= final["top1"] <= 100.0 and {"top1_la", "head", "medium", "tail"} <= set(final)

    checkpoints = sorted(p.name for p in (model_dir / "checkpoints").iterdir())
    assert checkpoints[-3:] == ["ckpt-000000004", "ckpt-000000006", "ckpt-000000008"]  # keep 3
    [best] = [name for name in checkpoints if name.startswith("best-")]
    best_json = json.loads((model_dir / "checkpoints" / best / "best.json").read_text())
    assert best_json == {"step": int(best[5:]), "valid_top1": max(e["valid"]["top1"] for e in results["history"])}
    assert not [name for name in checkpoints if name.startswith(".")]  # no temporary leftovers
    assert (model_dir / "run.lock").read_text() == ""  # released

    tags = _tensorboard_tags(model_dir / "tensorboard")
    for tag in ("train/loss", "train/loss_x", "train/loss_u", "train/loss_align", "train/mask",
                "train/learning_rate", "eval_test/top1", "eval_test/top1_la", "eval_valid/top1",
                "eval_test/head", "eval_test/tail", "eval_test/top1_median20"):
        assert tag in tags, f"{tag} missing from TensorBoard; have {sorted(tags)[:20]}..."
    assert any(t.startswith("daso_histogram_m/") for t in tags)
    assert any(t.startswith("daso_class_weights_v/") for t in tags)
    assert any(t.startswith("eval_test_per_class/") for t in tags)
    assert any(t.startswith("pseudo_labels_precision/") or t.startswith("pseudo_labels/") for t in tags)
    assert "step 8/8" in result.stdout and "labeled" in result.stdout


def _tensorboard_tags(directory):
    import tensorflow as tf

    tags = set()
    for path in pathlib.Path(directory).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_killed_run_resumes_to_the_same_state(tmp_path, trained_run, overrides):
    reference_dir, _ = trained_run
    model_dir = tmp_path / "interrupted"
    command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={EXPERIMENT}",
               f"--model_dir={model_dir}", f"--params_override={overrides}"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=run_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while not final_checkpoint(model_dir, 2).with_suffix(".index").exists():
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    latest = max(p.name for p in (model_dir / "checkpoints").glob("ckpt-*"))
    assert latest < "ckpt-000000008", "the run finished before it could be interrupted"

    result = run_py(model_dir, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from step" in result.stdout
    assert_same_state(read_checkpoint(final_checkpoint(model_dir)), read_checkpoint(final_checkpoint(reference_dir)),
                      atol=1e-5)


def test_mirrored_on_two_virtual_cpus_matches_one_device(tmp_path, trained_run, overrides):
    reference_dir, _ = trained_run
    model_dir = tmp_path / "mirrored"
    result = run_py(model_dir, overrides + ",runtime.distribution_strategy=mirrored,runtime.virtual_cpu_devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy" in result.stdout and "2 replica(s)" in result.stdout
    # float64: the only differences are reduction orders (measured ~1e-15 after 12 steps).
    assert_same_state(read_checkpoint(final_checkpoint(model_dir)), read_checkpoint(final_checkpoint(reference_dir)),
                      atol=1e-9)


def test_multi_worker_mirrored_two_local_workers(tmp_path, trained_run, overrides):
    model_dir = tmp_path / "multi_worker"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    tiny = overrides.replace("trainer.train_steps=8", "trainer.train_steps=4")
    command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={EXPERIMENT}", f"--model_dir={model_dir}",
               f"--params_override={tiny},runtime.distribution_strategy=multi_worker_mirrored"]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=run_env(TF_CONFIG=tf_config),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=240) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["finished"] is True and results["step"] == 4
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith("results")) == ["results.json"]
    assert not [p for p in (model_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # no worker scratch
    assert "2 replica(s)" in outputs[0][0] and "done: step 4" in outputs[0][0]
    assert "done:" not in outputs[1][0]  # the non-chief worker stays quiet
    # Two workers train like one device on the same global batches (float64; measured ~1e-14).
    reference_dir, _ = trained_run
    assert_same_state(read_checkpoint(final_checkpoint(model_dir, 4)),
                      read_checkpoint(final_checkpoint(reference_dir, 4)), atol=1e-9)


def test_eval_mode_reuses_the_run_settings(trained_run):
    model_dir, _ = trained_run
    result = run_py(model_dir, "", "--mode=eval")  # no overrides needed: params.yaml is the base
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((model_dir / "eval_results.json").read_text())
    history = json.loads((model_dir / "results.json").read_text())["history"]
    assert payload["step"] == 8
    assert payload["test"]["top1"] == pytest.approx(history[-1]["test"]["top1"])


# --------------------------------------------------------------------------- bad input


def test_params_mismatch_is_one_line_and_leaves_run_untouched(trained_run, overrides):
    model_dir, _ = trained_run
    before = tree_digest(model_dir)
    result = run_py(model_dir, overrides + ",data.seed=1,model.width=2")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("run.py: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "data.seed" in errors[0] and "model.width" in errors[0] and "refusing to resume" in errors[0]
    assert tree_digest(model_dir) == before


@pytest.mark.parametrize("make_args, message", [
    (lambda d, o: ("no_such_experiment", o), "unknown experiment 'no_such_experiment'; known experiments: cifar10_lt_n500"),
    (lambda d, o: (EXPERIMENT, o + ",trainer.train_step=3"), "did you mean 'trainer.train_steps'"),
    (lambda d, o: (EXPERIMENT, o + ",trainer.eval_interval=often"), "trainer.eval_interval='often': expected an integer"),
    (lambda d, o: (EXPERIMENT, o.replace("data.data_dir=", "data.data_dir=/missing")), "directory not found"),
])
def test_bad_input_messages(tmp_path, overrides, make_args, message):
    import run

    experiment, params = make_args(tmp_path, overrides)
    with pytest.raises(Exception, match=message) as error:
        run.resolve_config(experiment, params, model_dir=str(tmp_path / "new"))
    assert type(error.value).__name__ in ("ConfigError", "UnknownExperimentError")


def test_unwritable_model_dir(tmp_path, overrides):
    import run

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(Exception, match="is not writable"):
        run.resolve_config(EXPERIMENT, overrides, model_dir=str(blocker / "run"))


def test_export_mode_writes_a_versioned_saved_model(tmp_path, trained_run):
    model_dir, _ = trained_run
    export_dir = tmp_path / "serving"
    result = run_py(model_dir, "", "--mode=export", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (export_dir / EXPERIMENT / "1" / "saved_model.pb").exists()


def test_unknown_algorithm_lists_known(tmp_path, overrides):
    import run

    with pytest.raises(Exception, match="algorithm.name='fixmach': expected one of .*daso.*fixmatch"):
        run.resolve_config(EXPERIMENT, overrides + ",algorithm.name=fixmach", model_dir=str(tmp_path / "new"))


def test_fast_paths_through_run_py_match_the_plain_run(tmp_path, trained_run, overrides):
    """XLA + augmentation inside the compiled step + 2 steps per execution: the same training."""
    reference_dir, _ = trained_run
    model_dir = tmp_path / "fast"
    result = run_py(model_dir, overrides + ",runtime.jit_compile=true,runtime.augment_on_device=true,"
                                           "runtime.steps_per_execution=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "XLA on" in result.stdout
    # float64; on-device augmentation draws bit-identical images, XLA only reorders reductions.
    assert_same_state(read_checkpoint(final_checkpoint(model_dir)), read_checkpoint(final_checkpoint(reference_dir)),
                      atol=1e-6)


def test_steps_per_execution_must_divide_the_intervals(tmp_path, overrides):
    result = run_py(tmp_path / "bad", overrides + ",runtime.steps_per_execution=3")
    assert result.returncode == 2
    assert "multiple of runtime.steps_per_execution=3" in result.stderr.strip().splitlines()[-1]
