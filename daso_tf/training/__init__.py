"""Training: fit + callbacks, evaluation, checkpoints, distribution, results.

Names are imported lazily so that run.py can check flags and model_dir (model_dir.py)
without importing TensorFlow.
"""

import importlib

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


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'daso_tf.training' has no attribute {name!r}")
