"""Checks on ``model_dir`` that run BEFORE anything is written or any TensorFlow op runs.

Bad input must never touch an existing run: the params comparison, writability and data
directory checks all happen here, and ``params.yaml`` is only (re)written once they pass.
"""

import os

from daso_tf.config import ConfigError, describe_differences, guarded_differences, read_params


def check_model_dir(config, model_dir, mode):
    """Validates ``model_dir`` for ``mode``; returns the stored config (or None for a new run).

    Raises ConfigError (one line, naming the problem) when:
    - it holds a run whose data/model/algorithm keys differ from ``config`` (resume refused);
    - eval/export is asked of a directory without a run;
    - the directory cannot be created or written (train modes; it is created here, so
      every check of the config must come first).
    """
    stored = check_stored_run(config, model_dir, mode)
    if mode in ("train", "train_and_eval"):
        _check_writable(model_dir)
    return stored


def check_stored_run(config, model_dir, mode):
    """The config of the run already in ``model_dir`` (None if there is none), after checking
    that ``config`` may resume it (see ``check_model_dir``); reads, never writes."""
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
    """Fails early, before anything is loaded or written, when the data cannot hold the run.

    - a local data directory must exist (an image folder: with its train/ and test/ class
      folders, listed but not read);
    - the unlabeled settings must fit the data (the -1 "whole extra unlabeled split" of STL-10
      on a dataset without one, or an M1 for a dataset whose extra split is used whole);
    - every class must have enough training images for ``num_valid_per_class +
      num_labeled_head + num_unlabeled_head`` (without M1 where the unlabeled images are a
      separate set: STL-10's extra split, or ``<data_dir>/unlabeled/``); TFDS datasets are
      checked against their known split sizes;
    - a TFDS dataset that is not prepared in the data_dir and whose download host cannot be
      reached (offline): one line naming the dataset, the data_dir and the image-folder
      alternative, within ``DOWNLOAD_PROBE_TIMEOUT_S`` seconds instead of TFDS's minutes of
      download retries.
    """
    from daso_tf.data.long_tailed_data import check_unlabeled_settings
    from daso_tf.data.sources import train_images_per_class

    data_dir = data_config.data_dir
    if data_config.source == "folder":
        if not data_dir or not os.path.isdir(data_dir):
            raise ConfigError(f"data.data_dir={data_dir}: directory not found (data.source=folder expects "
                              "<data_dir>/train/<class>/*.jpg and <data_dir>/test/<class>/*.jpg)")
        if not os.path.isdir(os.path.join(data_dir, "train")):
            raise ConfigError(f"data.data_dir={data_dir} has no train/ subdirectory (expected "
                              "<data_dir>/train/<class>/*.jpg and <data_dir>/test/<class>/*.jpg)")
    elif data_dir and not os.path.isdir(data_dir):
        raise ConfigError(f"data.data_dir={data_dir}: directory not found")
    try:
        per_class, extra_unlabeled = train_images_per_class(data_config.dataset, data_config.source, data_dir)
    except (OSError, ValueError) as error:
        raise ConfigError(f"data.data_dir={data_dir}: {error}") from None
    where = (f"the training split of {data_config.dataset}" if data_config.source == "tfds"
             else f"{os.path.join(data_dir, 'train')}")
    described = data_config.dataset if data_config.source == "tfds" else f"data.data_dir={data_dir}"
    try:
        check_unlabeled_settings(extra_unlabeled, num_unlabeled_head=data_config.num_unlabeled_head,
                                 imbalance_unlabeled=data_config.imbalance_unlabeled,
                                 reverse_unlabeled=data_config.reverse_unlabeled, dataset=described)
    except ValueError as error:
        raise ConfigError(f"data.{error}") from None
    parts = {"data.num_valid_per_class": data_config.num_valid_per_class,
             "data.num_labeled_head": data_config.num_labeled_head}
    if not extra_unlabeled:
        parts["data.num_unlabeled_head"] = data_config.num_unlabeled_head
    needed = sum(parts.values())
    smallest = min(per_class, key=per_class.get)
    if per_class[smallest] < needed:
        terms = " + ".join(f"{name}={value}" for name, value in parts.items())
        raise ConfigError(f"{terms} = {needed} training images per class are needed, but class {smallest} "
                          f"of {where} has {per_class[smallest]}")
    if data_config.source == "tfds":
        from daso_tf.data.sources import DatasetUnavailableError, check_tfds_available

        try:
            check_tfds_available(data_config.dataset, data_dir)
        except DatasetUnavailableError as error:
            raise ConfigError(f"data.dataset={data_config.dataset}: {error}. Prepare it there on a machine with "
                              f"network access (e.g. `tfds build {data_config.dataset} --data_dir=<dir>`, then "
                              "data.data_dir=<dir>), or train from an image-folder copy: "
                              f"{FOLDER_ALTERNATIVE}") from None
