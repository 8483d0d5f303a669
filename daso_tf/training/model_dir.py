"""Checks on ``model_dir`` that run BEFORE anything is written or any TensorFlow op runs.

Bad input must never touch an existing run: the params comparison, writability and data
directory checks all happen here, and ``params.yaml`` is only (re)written once they pass.
"""

import os

from daso_tf.config import ConfigError, describe_differences, guarded_differences, read_params


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


FOLDER_ALTERNATIVE = ("--params_override=data.source=folder,data.data_dir=<root of train/<class>/*.jpg and "
                      "test/<class>/*.jpg>")


def check_data_source(data_config):
    """Fails early, before anything is loaded or written, when the data cannot be had.

    - folder source: the directory tree is missing;
    - TFDS source: the dataset is not prepared in the data_dir and its download host
      cannot be reached (offline): one line naming the dataset, the data_dir and the
      image-folder alternative, within ``DOWNLOAD_PROBE_TIMEOUT_S`` seconds instead of
      TFDS's minutes of download retries;
    - the unlabeled settings do not fit the data (the -1 "whole extra unlabeled split" of
      STL-10 on a dataset without one, or an M1 for a dataset whose extra split is used whole).
    """
    from daso_tf.data.long_tailed_data import check_unlabeled_settings
    from daso_tf.data.sources import TFDS_UNLABELED_SPLITS

    data_dir = data_config.data_dir
    if data_config.source == "folder":
        if not data_dir or not os.path.isdir(data_dir):
            raise ConfigError(f"data.data_dir={data_dir}: directory not found (data.source=folder expects "
                              "<data_dir>/train/<class>/*.jpg and <data_dir>/test/<class>/*.jpg)")
        if not os.path.isdir(os.path.join(data_dir, "train")):
            raise ConfigError(f"data.data_dir={data_dir} has no train/ subdirectory (expected "
                              "<data_dir>/train/<class>/*.jpg and <data_dir>/test/<class>/*.jpg)")
        has_extra_unlabeled = os.path.isdir(os.path.join(data_dir, "unlabeled"))
        described = f"data.data_dir={data_dir}"
    else:
        if data_dir and not os.path.isdir(data_dir):
            raise ConfigError(f"data.data_dir={data_dir}: directory not found")
        has_extra_unlabeled = data_config.dataset in TFDS_UNLABELED_SPLITS
        described = data_config.dataset
    try:
        check_unlabeled_settings(has_extra_unlabeled, num_unlabeled_head=data_config.num_unlabeled_head,
                                 imbalance_unlabeled=data_config.imbalance_unlabeled,
                                 reverse_unlabeled=data_config.reverse_unlabeled, dataset=described)
    except ValueError as error:
        raise ConfigError(f"data.{error}") from None
    if data_config.source == "tfds":
        from daso_tf.data.sources import DatasetUnavailableError, check_tfds_available

        try:
            check_tfds_available(data_config.dataset, data_dir)
        except DatasetUnavailableError as error:
            raise ConfigError(f"data.dataset={data_config.dataset}: {error}. Prepare it there on a machine with "
                              f"network access (e.g. `tfds build {data_config.dataset} --data_dir=<dir>`, then "
                              "data.data_dir=<dir>), or train from an image-folder copy: "
                              f"{FOLDER_ALTERNATIVE}") from None
