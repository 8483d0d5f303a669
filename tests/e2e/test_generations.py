"""run.py with CReST+'s generations: a run killed before a generation boundary and resumed
crosses it into exactly the state of an uninterrupted run (float64)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.runs import EXPERIMENT, REPO_ROOT, run_env, run_py

STEPS, BOUNDARY = 6, 3  # two generations of 3 steps
TINY = ",".join([
    "data.num_valid_per_class=2", "data.num_labeled_head=10", "data.num_unlabeled_head=12",
    "data.imbalance_labeled=5", "data.imbalance_unlabeled=5", "data.labeled_batch_size=4",
    "model.depth=10", "model.width=1", "model.dtype_policy=float64", "runtime.deterministic=true",
    "algorithm.name=fixmatch_crest", "algorithm.num_generations=2", f"trainer.train_steps={STEPS}",
    "trainer.eval_interval=3", "trainer.checkpoint_interval=1", "trainer.log_interval=1",
    "trainer.eval_batches=1", "trainer.eval_batch_size=20",
])


def checkpoint(model_dir, step):
    return model_dir / "checkpoints" / f"ckpt-{step:09d}" / "ckpt"


def read_checkpoint(path):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith("_CHECKPOINTABLE") and "save_counter" not in name}


@pytest.mark.slow
def test_killed_before_a_generation_boundary_resumes_across_it(tmp_path, cifar_folder):
    import numpy as np

    overrides = f"data.source=folder,data.data_dir={cifar_folder},{TINY}"
    reference_dir, model_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    result = run_py(reference_dir, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"generation 2/2 from step {BOUNDARY}: " in result.stdout

    command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={EXPERIMENT}", f"--model_dir={model_dir}",
               f"--params_override={overrides}"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=run_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while not checkpoint(model_dir, 1).with_suffix(".index").exists():
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    latest = max(int(p.name.split("-")[1]) for p in (model_dir / "checkpoints").glob("ckpt-*"))
    assert latest < BOUNDARY, f"killed at step {latest}, after the generation boundary"

    result = run_py(model_dir, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from step {latest}" in result.stdout
    assert f"generation 2/2 from step {BOUNDARY}: " in result.stdout
    resumed, reference = read_checkpoint(checkpoint(model_dir, STEPS)), read_checkpoint(checkpoint(reference_dir, STEPS))
    assert sorted(resumed) == sorted(reference)
    assert reference["model/generation/.ATTRIBUTES/VARIABLE_VALUE"] == 1
    for name in reference:
        np.testing.assert_allclose(resumed[name], reference[name], rtol=0, atol=1e-12, err_msg=name)
