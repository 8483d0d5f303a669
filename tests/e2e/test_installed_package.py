"""The installable package: a wheel built from a fresh clone works on its own.

Builds the wheel from a clean clone of this repository (no network: the installed setuptools
builds it), installs it into an isolated target directory and, from a directory outside the
checkout with only that target on the path, checks what a library user and a command-line
user meet: the import and its version, the README's user-code example (fit, evaluate,
.keras save/load, export), ``daso-tf --list_experiments`` and a 2-step ``daso-tf`` run whose
results.json records the version.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.runs import EXPERIMENT
from tests.e2e.runs import TINY

pytestmark = pytest.mark.slow


def _source_version():
    text = (REPO_ROOT / "daso_tf" / "version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def _fresh_copy(target):
    """A clean clone (committed files only), or the tracked files when not in a git checkout."""
    if (REPO_ROOT / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO_ROOT), str(target)], check=True)
    else:
        shutil.copytree(REPO_ROOT, target, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", ".pytest_cache", "runs", "build", "dist", "*.egg-info"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    clone, wheels, target = root / "clone", root / "wheels", root / "site"
    _fresh_copy(clone)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(clone), "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(wheels)], check=True, cwd=root)
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "-q", "--target", str(target), str(wheel)], check=True, cwd=root)
    outside = root / "elsewhere"
    outside.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    return {"wheel": wheel, "target": target, "clone": clone, "cwd": outside, "env": env,
            "command": target / "bin" / "daso-tf"}


def _run(installed, args, timeout=300):
    return subprocess.run(args, cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_holds_only_the_daso_tf_package(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        top_level = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert top_level == {"daso_tf", f"daso_tf-{_source_version()}.dist-info"}
    assert installed["wheel"].name.startswith(f"daso_tf-{_source_version()}-py3")
    installed_names = {p.name for p in installed["target"].iterdir()} - {"bin"}
    assert not installed_names & {"export", "experiments", "bench", "tests", "examples"}


def test_import_from_outside_the_checkout(installed):
    done = _run(installed, [sys.executable, "-c",
                            "import daso_tf, daso_tf.serving, daso_tf.experiments; "
                            "print(daso_tf.__version__); print(daso_tf.__file__)"])
    assert done.returncode == 0, done.stderr[-2000:]
    version, location = done.stdout.split()
    assert version == _source_version()
    assert pathlib.Path(location).is_relative_to(installed["target"])


def test_user_code_example_against_the_installed_package(installed, tmp_path):
    script = installed["clone"] / "examples" / "user_code.py"
    done = _run(installed, [sys.executable, str(script), "--steps", "6", "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restored step 6" in done.stdout
    assert (tmp_path / "daso.keras").is_file()
    version_dir = tmp_path / "serving" / "my_daso" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (tmp_path / "serving" / "models.config").is_file()
    metadata = json.loads((version_dir / "assets.extra" / "daso_tf.json").read_text())
    assert metadata["provenance"]["daso_tf"] == _source_version()
    assert metadata["provenance"]["git_commit"] is None  # installed, not a checkout


def test_console_script_lists_experiments(installed):
    done = _run(installed, [str(installed["command"]), "--list_experiments"])
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("cifar10_lt_n1500", "cifar100_lt_n150", "stl10_lt_n450_g10"):
        assert f"| {name} |" in done.stdout


def test_console_script_bad_input_names_itself(installed):
    done = _run(installed, [str(installed["command"]), "--experiment=no_such_experiment"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("daso-tf: error: unknown experiment 'no_such_experiment'")


def test_console_script_trains_and_records_the_version(installed, cifar_folder, tmp_path):
    model_dir = tmp_path / "run"
    overrides = f"data.source=folder,data.data_dir={cifar_folder},{TINY},trainer.train_steps=2,trainer.eval_interval=2"
    done = _run(installed, [str(installed["command"]), f"--experiment={EXPERIMENT}", f"--model_dir={model_dir}",
                            f"--params_override={overrides}"])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["finished"] and results["step"] == 2
    provenance = results["provenance"]
    assert provenance["daso_tf"] == _source_version()
    assert provenance["git_commit"] is None
    import tensorflow as tf
    import keras

    assert (provenance["tensorflow"], provenance["keras"]) == (tf.__version__, keras.__version__)
    import yaml

    params = yaml.safe_load((model_dir / "params.yaml").read_text())
    assert params["provenance"]["daso_tf"] == _source_version()
