"""Training: fit + callbacks, evaluation, checkpoints, distribution, results."""

from daso_tf.training.checkpoints import CheckpointManager
from daso_tf.training.distribute import configure_devices, make_strategy
from daso_tf.training.evaluation import classification_metrics, running_median
from daso_tf.training.loop import TrainingRun, plan_segments, run_experiment
from daso_tf.training.model_dir import check_data_source, check_model_dir

__all__ = [
    "CheckpointManager",
    "TrainingRun",
    "check_data_source",
    "check_model_dir",
    "classification_metrics",
    "configure_devices",
    "make_strategy",
    "plan_segments",
    "run_experiment",
    "running_median",
]
