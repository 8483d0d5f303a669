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

from tests.e2e.runs import (EXPERIMENT, REPO_ROOT, assert_same_state, final_checkpoint, read_checkpoint,
                             run_env, run_py, tree_digest)
from tests.helpers import free_ports
from tests.tools.test_report import check_png


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


def test_results_record_training_windows_and_class_counts(trained_run):
    model_dir, _ = trained_run
    results = json.loads((model_dir / "results.json").read_text())
    # N1=10, M1=12, gamma=5 over 10 classes: n_k = int(n_1 * 5 ** (-k / 9)).
    assert results["labeled_counts"] == [10, 8, 6, 5, 4, 4, 3, 2, 2, 2]
    assert results["unlabeled_counts"] == [12, 10, 8, 7, 5, 4, 4, 3, 2, 2]
    training = results["training"]
    # A window ends at every evaluation (4, 8) or checkpoint (2, 4, 6, 8) step.
    assert [(e["step"], e["start_step"]) for e in training] == [(2, 0), (4, 2), (6, 4), (8, 6)]
    for entry in training:
        counts = entry["pseudo_labels"]
        assert counts["num_unlabeled"] == 2 * 8  # 2 steps of 2 x 4 unlabeled images
        assert counts["mask_rate"] == counts["num_selected"] / 16
        assert entry["mask"] == pytest.approx(counts["mask_rate"], abs=1e-9)  # same samples, equal batches
        # Every unlabeled image has a known class here: all selected samples are counted.
        assert sum(counts["selected"]) == sum(counts["selected_by_true_class"]) == counts["num_selected"]
        assert all(c <= min(s, t) for c, s, t in zip(counts["correct"], counts["selected"],
                                                     counts["selected_by_true_class"]))
        assert entry["loss"] == pytest.approx(entry["loss_x"] + entry["loss_u"] + entry["loss_align"], rel=1e-9)
        assert entry["learning_rate"] == pytest.approx(0.03)


def test_report_mode_reads_the_run_without_tensorflow(trained_run):
    model_dir, _ = trained_run
    code = ("import atexit, runpy, sys; "
            "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules)); "
            f"sys.argv = ['run.py', '--mode=report', '--model_dir={model_dir}']; "
            "runpy.run_path('run.py', run_name='__main__')")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=run_env(), capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "tensorflow imported: False" in completed.stdout
    page = (model_dir / "report" / "report.html").read_text()
    assert "daso cifar10_lt_n1500 seed 0" in page and "8 / 8: finished; latest checkpoint 8" in page
    results = json.loads((model_dir / "results.json").read_text())
    assert f"{results['test_top1_median20']:.2f} (median-20)" in page
    drawn = ["accuracy", "per_class_accuracy", "mask_rate", "losses"]
    if any(sum(e["pseudo_labels"]["selected"]) for e in results["training"]):
        drawn += ["pseudo_label_quality", "pseudo_label_distribution"]
    else:
        assert page.count("Not drawn:") == 2  # no pseudo-label passed the mask in 8 steps
    for stem in drawn:
        assert f"href='{stem}.png'" in page and check_png(model_dir / "report" / f"{stem}.png")


def test_report_mode_refuses_a_directory_without_a_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_py(empty, "", "--mode=report")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"run.py: error: {empty} is not a run directory (no results.json or params.yaml; expected the --model_dir "
        "of a run.py run)"]
    assert list(empty.iterdir()) == []


CPU_EXPERIMENTS = ("cifar10_lt_n1500_cpu", "cifar10_lt_n1500_reversed_cpu")
# The CPU experiments with a tiny split, WRN-10-1 (width 1 is theirs), 2 steps; threshold 0.05 < 1/10 lets
# every pseudo-label pass the mask (a softmax over 10 classes has a maximum >= 0.1).
CPU_TINY = ",".join([
    "data.num_valid_per_class=2", "data.num_labeled_head=10", "data.num_unlabeled_head=12",
    "data.imbalance_labeled=5", "data.imbalance_unlabeled=5", "data.labeled_batch_size=4", "model.depth=10",
    "algorithm.threshold=0.05", "trainer.train_steps=2", "trainer.eval_interval=2", "trainer.checkpoint_interval=2",
    "trainer.log_interval=2", "trainer.eval_batch_size=20", "trainer.eval_batches=2",
])


@pytest.fixture(scope="module")
def cpu_experiment_runs(tmp_path_factory, cifar_folder):
    """Both CPU experiments, 2 steps each, started where their default data.data_dir exists."""
    workdir = tmp_path_factory.mktemp("newcomer")
    (workdir / "data").mkdir()
    (workdir / "data" / "cifar10_jpeg").symlink_to(cifar_folder, target_is_directory=True)
    runs = {}
    for name in CPU_EXPERIMENTS:
        command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={name}", f"--model_dir=runs/{name}",
                   f"--params_override={CPU_TINY}"]
        completed = subprocess.run(command, cwd=workdir, env=run_env(), capture_output=True, text=True, timeout=240)
        assert completed.returncode == 0, completed.stderr[-3000:]
        runs[name] = workdir / "runs" / name
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_EXPERIMENTS)
def test_cpu_experiment_runs_from_its_default_data_dir(cpu_experiment_runs, name):
    import yaml

    model_dir = cpu_experiment_runs[name]
    params = yaml.safe_load((model_dir / "params.yaml").read_text())
    # The experiment's own settings (not overridden above) reach the run.
    assert (params["data"]["source"], params["data"]["data_dir"]) == ("folder", "data/cifar10_jpeg")
    assert (params["model"]["width"], params["algorithm"]["warmup_steps"]) == (1, 1000)
    assert params["data"]["reverse_unlabeled"] == name.endswith("reversed_cpu")
    assert params["algorithm"]["dist_temperature"] == (0.3 if name.endswith("reversed_cpu") else 1.5)
    results = json.loads((model_dir / "results.json").read_text())
    assert results["finished"] is True and results["step"] == 2 and len(results["history"]) == 1
    counts = results["training"][0]["pseudo_labels"]
    assert counts["num_selected"] == counts["num_unlabeled"] == 2 * 8 and counts["mask_rate"] == 1.0
    expected_unlabeled = [12, 10, 8, 7, 5, 4, 4, 3, 2, 2]
    assert results["unlabeled_counts"] == (expected_unlabeled[::-1] if name.endswith("reversed_cpu")
                                           else expected_unlabeled)


@pytest.mark.slow
def test_report_of_several_real_runs(tmp_path, trained_run, cpu_experiment_runs):
    model_dir, _ = trained_run
    out = tmp_path / "report"
    runs = [str(model_dir)] + [str(cpu_experiment_runs[name]) for name in CPU_EXPERIMENTS]
    completed = subprocess.run([sys.executable, "-m", "daso_tf.tools.report", *runs, "--out", str(out),
                                "--labels", "tiny,cpu,cpu reversed"], cwd=REPO_ROOT, env=run_env(),
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    page = (out / "report.html").read_text()
    assert "<th>tiny</th><th>cpu</th><th>cpu reversed</th>" in page and "Not drawn" not in page
    assert "gamma_l=5 reversed" in page and "gamma_l=5 gamma_u=5" in page
    for stem in ("accuracy", "per_class_accuracy", "pseudo_label_quality", "pseudo_label_distribution",
                 "mask_rate", "losses"):
        assert check_png(out / f"{stem}.png")


def _tensorboard_tags(directory):
    import tensorflow as tf

    tags = set()
    for path in pathlib.Path(directory).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_auto_runtime_runs_several_steps_per_host_round_trip(trained_run):
    import tensorflow as tf

    model_dir, result = trained_run
    # Intervals 2 (log, checkpoint) and 4 (eval), 8 steps: 2 steps per execution, exactly.
    assert "2 step(s) per execution (auto)" in result.stdout and "XLA off (auto)" in result.stdout
    losses = {}
    for path in (model_dir / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "train/loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    assert sorted(losses) == [2, 4, 6, 8] and all(np.isfinite(list(losses.values())))


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
    # The recorded training windows are cut at the restored step and recomputed identically.
    resumed, reference = (json.loads((d / "results.json").read_text())["training"] for d in (model_dir, reference_dir))
    assert [(e["step"], e["start_step"]) for e in resumed] == [(e["step"], e["start_step"]) for e in reference]
    for mine, theirs in zip(resumed, reference):
        assert mine["pseudo_labels"] == theirs["pseudo_labels"]
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-6)


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
    # Two workers train like one device on the same global batches (float64; measured ~1e-14) ...
    reference_dir, _ = trained_run
    state = read_checkpoint(final_checkpoint(model_dir, 4))
    reference = read_checkpoint(final_checkpoint(reference_dir, 4))
    # ... but DASO's histogram window does not close at the run's last step (as in the reference:
    # t + 1 < total_steps), so at step 4 of 4 it still holds what the 8-step run closed at step 4.
    (window,) = [name for name in state if "window_counts" in name]
    (closed,) = [name for name in state if "closed_counts" in name]
    np.testing.assert_array_equal(state[window], reference[closed])
    assert not reference[window].any() and state[window].sum() == 2 * 8  # 2 steps of mu * B = 2 * 4 images
    for name in (window, closed):
        del state[name], reference[name]
    assert_same_state(state, reference, atol=1e-9)


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
    result = run_py(model_dir, "export.max_image_pixels=1024", "--mode=export", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (export_dir / EXPERIMENT / "1" / "saved_model.pb").exists()
    import tensorflow as tf

    serve = tf.saved_model.load(str(export_dir / EXPERIMENT / "1")).signatures["serving_default"]
    assert serve(images=tf.zeros([1, 32, 32, 3], tf.uint8))["class_ids"].shape == [1]  # 1024 pixels: allowed
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_image_pixels=1024 pixels"):
        serve(images=tf.zeros([1, 33, 32, 3], tf.uint8))


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
