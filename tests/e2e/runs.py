"""Helpers of the run.py end-to-end tests: running run.py, the tiny offline image folder.

The tiny run (``TINY``: WRN-10-1, batch 4 + 2x4, 8 steps, float64 so that runs can be
compared tightly) on a few hundred offline CIFAR-10 JPEGs; the fixtures are in conftest.py.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENT = "cifar10_lt_n1500"
# Images per class of the tiny CIFAR-10 folder (train/<class>/, test/<class>/).
TRAIN_PER_CLASS, TEST_PER_CLASS = 26, 4
TINY = ",".join([
    "data.num_valid_per_class=2", "data.num_labeled_head=10", "data.num_unlabeled_head=12",
    "data.imbalance_labeled=5", "data.imbalance_unlabeled=5", "data.labeled_batch_size=4",
    "model.depth=10", "model.width=1", "model.dtype_policy=float64",
    "algorithm.warmup_steps=4", "algorithm.histogram_period=2", "algorithm.queue_size=4",
    "trainer.train_steps=8", "trainer.eval_interval=4", "trainer.checkpoint_interval=2",
    "trainer.eval_batch_size=20", "trainer.eval_batches=2", "trainer.log_interval=2",
    "runtime.deterministic=true",
])


def run_env(**extra):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    environment.pop("TF_CONFIG", None)
    environment.update(extra)
    return environment


def run_py(model_dir, overrides="", *args, env=None, timeout=240, experiment=EXPERIMENT):
    command = [sys.executable, str(REPO_ROOT / "run.py"), f"--experiment={experiment}",
               f"--model_dir={model_dir}", f"--params_override={overrides}", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env or run_env(), capture_output=True, text=True,
                          timeout=timeout)


def read_checkpoint(path):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith("_CHECKPOINTABLE") and "save_counter" not in name}


def assert_same_state(a, b, atol):
    assert sorted(a) == sorted(b)
    worst = max((float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
                 if np.size(a[k]) else 0.0, k) for k in a)
    assert worst[0] <= atol, f"largest difference {worst[0]:.3g} in {worst[1]}"


def checkpoint_dir(model_dir, step):
    return pathlib.Path(model_dir) / "checkpoints" / f"ckpt-{step:09d}"


def final_checkpoint(model_dir, step=8):
    return checkpoint_dir(model_dir, step) / "ckpt"


def run_record(model_dir):
    """What an interrupted run must reproduce exactly: evaluations, training windows, medians,
    checkpoints kept."""
    model_dir = pathlib.Path(model_dir)
    results = json.loads((model_dir / "results.json").read_text())
    names = sorted(p.name for p in (model_dir / "checkpoints").iterdir())
    best = [json.loads((model_dir / "checkpoints" / n / "best.json").read_text()) for n in names if n.startswith("best-")]
    return {"history": results["history"], "training": results["training"], "finished": results["finished"], "step": results["step"],
            "test_top1_median20": results["test_top1_median20"], "checkpoints": names, "best": best}


def assert_same_run(model_dir, reference_dir):
    """Bit-identical final state (model, EMA, optimiser, queue, histogram, step) and record."""
    assert_same_state(read_checkpoint(final_checkpoint(model_dir)), read_checkpoint(final_checkpoint(reference_dir)),
                      atol=0.0)
    record, expected = run_record(model_dir), run_record(reference_dir)
    for key in expected:
        assert record[key] == expected[key], f"{key}: {record[key]} != {expected[key]} (the uninterrupted run's)"


def error_lines(stderr):
    """The ``run.py: error:`` lines of a run, asserting there is no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("run.py: error:")]


def tree_digest(directory):
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(directory).rglob("*")):
        digest.update(str(path.relative_to(directory)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def extract_cifar_folder(cifar10_zip, root):
    """A few JPEGs per class of the offline CIFAR-10 copy, as root/train/<class>/, root/test/<class>/."""
    wanted = {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}
    taken = {}
    with zipfile.ZipFile(cifar10_zip) as archive:
        for name in sorted(archive.namelist()):
            parts = pathlib.PurePosixPath(name).parts
            split_index = next((i for i, p in enumerate(parts) if p in wanted), None)
            if split_index is None or not name.endswith(".jpg") or len(parts) - split_index != 3:
                continue
            split, label = parts[split_index], parts[split_index + 1]
            if taken.get((split, label), 0) >= wanted[split]:
                continue
            taken[(split, label)] = taken.get((split, label), 0) + 1
            target = pathlib.Path(root) / split / label / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    assert len({label for _, label in taken}) == 10
    return root
