"""Checks on ``model_dir`` that run BEFORE anything is written or any TensorFlow op runs.

Bad input must never touch an existing run: the params comparison, writability and data
directory checks all happen here, and ``params.yaml`` is only (re)written once they pass.
"""

import os

from daso_tf.config import ConfigError, describe_differences, guarded_differences, read_params


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used as it is (in use by another run, damaged files).

    Its message is one line for the user (run.py prints it and exits with status 2).
    """


def check_model_dir(config, model_dir, mode):
    """Validates ``model_dir`` for ``mode``; returns the stored config (or None for a new run).

    Raises ConfigError (one line, naming the problem) when:
    - the directory cannot be created or written (train modes);
    - it holds a run whose data/model/algorithm keys differ from ``config`` (resume refused);
    - eval/export is asked of a directory without a run.
    """
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError(f"--model_dir={model_dir} exists and is not a directory")
    stored = read_params(model_dir) if os.path.isdir(model_dir) else None
    if stored is not None:
        differences = guarded_differences(stored, config)
        if differences:
            raise ConfigError(
                f"--model_dir={model_dir} holds a run with different settings; refusing to resume: "
                f"{describe_differences(differences)}. Use another --model_dir, or pass the run's settings again "
                f"(--params_override={os.path.join(model_dir, 'params.yaml')} restores them all); only trainer.*, "
                "runtime.* and export.* keys may change on resume")
    if mode in ("eval", "export") and stored is None:
        raise ConfigError(f"--mode={mode} needs a trained run in --model_dir={model_dir} (no params.yaml there)")
    if mode in ("train", "train_and_eval"):
        _check_writable(model_dir)
    return stored


def load_run_config(model_dir, overrides, mode):
    """The config of the run in ``model_dir`` with ``overrides`` applied (eval/export).

    The stored params.yaml is the base, so evaluating or exporting needs no overrides;
    an override of a data/model/algorithm key that changes the run is refused.
    """
    from daso_tf.config import apply_overrides

    stored = read_params(model_dir) if os.path.isdir(model_dir) else None
    if stored is None:
        raise ConfigError(f"--mode={mode} needs a trained run in --model_dir={model_dir} (no params.yaml there)")
    config = apply_overrides(read_params(model_dir), overrides)
    differences = guarded_differences(stored, config)
    if differences:
        raise ConfigError(f"--mode={mode} cannot change the settings of the run in --model_dir={model_dir}: "
                          f"{describe_differences(differences)}")
    return config.validate()


def _check_writable(model_dir):
    """Creates ``model_dir`` if needed and proves a file can be written there.

    A real write (not ``os.access``) so that read-only mounts are caught even as root.
    """
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"--model_dir={model_dir} is not writable ({reason})") from None


def check_data_source(data_config):
    """Fails early (before loading anything) when a local data directory is missing."""
    if data_config.source == "folder":
        data_dir = data_config.data_dir
        if not data_dir or not os.path.isdir(data_dir):
            raise ConfigError(f"data.data_dir={data_dir}: directory not found (data.source=folder expects "
                              "<data_dir>/train/<class>/*.jpg and <data_dir>/test/<class>/*.jpg)")
        if not os.path.isdir(os.path.join(data_dir, "train")):
            raise ConfigError(f"data.data_dir={data_dir} has no train/ subdirectory (expected "
                              "<data_dir>/train/<class>/*.jpg and <data_dir>/test/<class>/*.jpg)")
    elif data_config.data_dir and not os.path.isdir(data_config.data_dir):
        raise ConfigError(f"data.data_dir={data_config.data_dir}: directory not found")
