"""A run that starts from another, finished run (cRT: ``algorithm.base_run``).

A learner with a ``base_run`` argument (cRT) re-trains on top of a finished run's online
encoder, so run.py checks, before anything is written (reading files only):

- that ``algorithm.base_run`` is set and names a daso_tf run (its ``params.yaml``);
- that the base run used exactly this run's data split and backbone: the ``SPLIT_KEYS``
  (which images are labeled, unlabeled, validation) and ``ENCODER_KEYS`` must be equal
  (the split is a pure function of them, so equal keys are the same split);
- that it is finished: it holds the checkpoint of its last step (``trainer.train_steps``),
  the reference's ``model_final.pth.tar``.

A cRT run that already holds a checkpoint of its own resumes from it and needs the base run
no more. ``final_checkpoint`` is what the run loads the encoder from.
"""

import os

from daso_tf.config import ConfigError, read_params
from daso_tf.training.checkpoints import CheckpointManager

# Keys that decide the split; data.data_dir may differ (the same data on another mount).
SPLIT_KEYS = ("data.dataset", "data.source", "data.num_valid_per_class", "data.num_labeled_head",
              "data.num_unlabeled_head", "data.imbalance_labeled", "data.imbalance_unlabeled",
              "data.reverse_unlabeled", "data.seed")
# Keys that decide the encoder's variables and what its features mean.
ENCODER_KEYS = ("model.backbone", "model.depth", "model.width", "model.dtype_policy", "data.image_size")


def takes_base_run(config):
    """Whether the chosen learner starts from a base run (it has a ``base_run`` argument)."""
    from daso_tf.training.learner_arguments import learner_class

    return "base_run" in learner_class(config.algorithm.name).hyperparameters()


def checkpoint_directory(model_dir):
    return os.path.join(model_dir, "checkpoints")


def final_checkpoint(base_run):
    """The checkpoint path of the last step of the finished run in ``base_run``.

    Raises ConfigError naming ``algorithm.base_run`` when it is no run or not finished.
    """
    stored = read_params(base_run) if os.path.isdir(base_run) else None
    if stored is None:
        raise ConfigError(f"algorithm.base_run={base_run}: not a daso_tf run directory (no params.yaml there); "
                          "expected the --model_dir of a finished run")
    last_step = stored.trainer.train_steps
    manager = CheckpointManager(None, checkpoint_directory(base_run))
    if last_step not in manager.checkpoint_steps():
        reached = manager.latest_step
        progress = "no checkpoint" if reached is None else f"its latest checkpoint is step {reached}"
        raise ConfigError(f"algorithm.base_run={base_run}: the run is not finished ({progress}; its final "
                          f"checkpoint is step {last_step}, trainer.train_steps); finish it first")
    return manager.path_for(last_step)


def check_base_run(config, model_dir):
    """Raises ConfigError (one line) when ``config`` may not start from its base run (see the
    module docstring). Reads files only; nothing is written."""
    base_run = config.algorithm.base_run
    if not takes_base_run(config):
        return
    if base_run is not None and os.path.abspath(base_run) == os.path.abspath(model_dir):
        raise ConfigError(f"algorithm.base_run={base_run}: is this run's own --model_dir; use a new --model_dir")
    if CheckpointManager(None, checkpoint_directory(model_dir)).checkpoint_steps():
        return  # resuming: the run's own checkpoint holds the encoder
    if base_run is None:
        raise ConfigError(f"algorithm.base_run=None: learner {config.algorithm.name!r} (algorithm.name) re-trains "
                          "on a finished run's encoder; set algorithm.base_run=<its --model_dir>")
    final_checkpoint(base_run)
    stored, requested = read_params(base_run).flat(), config.flat()
    differences = [(key, stored[key], requested[key]) for key in SPLIT_KEYS + ENCODER_KEYS
                   if stored[key] != requested[key]]
    if differences:
        listed = ", ".join(f"{key} (base run {old!r}, this run {new!r})" for key, old, new in differences)
        raise ConfigError(f"algorithm.base_run={base_run}: the base run has another data split or backbone: "
                          f"{listed}; use the base run's --experiment and data.*/model.* overrides")
