"""Helpers of the run.py end-to-end tests: running run.py, the tiny offline image folder."""

import hashlib
import os
import pathlib
import subprocess
import sys
import zipfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENT = "cifar10_lt_n1500"
# Images per class of the tiny CIFAR-10 folder (train/<class>/, test/<class>/).
TRAIN_PER_CLASS, TEST_PER_CLASS = 26, 4


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


def error_lines(stderr):
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
