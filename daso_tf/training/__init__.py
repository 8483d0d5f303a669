"""Training: fit + callbacks, evaluation, checkpoints, distribution, results.

Names are imported lazily so that run.py can check flags and model_dir (model_dir.py)
without importing TensorFlow.
"""

from daso_tf._lazy import lazy_getattr

_PUBLIC = {
    "CheckpointManager": "daso_tf.training.checkpoints",
    "configure_devices": "daso_tf.training.distribute",
    "make_strategy": "daso_tf.training.distribute",
    "classification_metrics": "daso_tf.training.evaluation",
    "running_median": "daso_tf.training.evaluation",
    "TrainingRun": "daso_tf.training.loop",
    "plan_segments": "daso_tf.training.loop",
    "run_experiment": "daso_tf.training.loop",
    "check_data_source": "daso_tf.training.model_dir",
    "check_model_dir": "daso_tf.training.model_dir",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_getattr(__name__, _PUBLIC, globals())
