"""``<model_dir>/results.json``: what a run reports (written by the chief only).

Rewritten after every evaluation (``finished: false``) and at the end of training, always
atomically (temp file + rename), so a killed run leaves a readable file. On resume the
history is reloaded and cut at the restored step: evaluations after the last checkpoint
are recomputed identically by the resumed run.
"""

import json
import os

from daso_tf.provenance import provenance
from daso_tf.training.evaluation import running_mean, running_median

RESULTS_FILE = "results.json"


def write_json_atomic(path, payload):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False, default=_json_default)
    os.replace(tmp, path)
    return path


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class EvaluationHistory:
    """The list of evaluations of one run: ``[{"step", "valid": {...}, "test": {...}}]``."""

    def __init__(self, entries=(), median_window=20):
        self.entries = list(entries)
        self.median_window = median_window

    @classmethod
    def load(cls, model_dir, *, up_to_step, median_window=20):
        """History from ``results.json``, keeping evaluations at steps <= ``up_to_step``."""
        path = os.path.join(model_dir, RESULTS_FILE)
        if not os.path.exists(path):
            return cls(median_window=median_window)
        try:
            with open(path) as f:
                entries = json.load(f).get("history", [])
        except (OSError, ValueError):
            entries = []  # unreadable: start the record afresh, training state is in checkpoints
        return cls([e for e in entries if e.get("step", 0) <= up_to_step], median_window)

    def append(self, step, valid_metrics, test_metrics):
        entry = {"step": int(step), "valid": valid_metrics, "test": test_metrics}
        self.entries = [e for e in self.entries if e["step"] != step] + [entry]
        entry["test_top1_median"] = self.median("test", "top1")
        entry["valid_top1_median"] = self.median("valid", "top1")
        entry["test_top1_mean"] = self.mean("test", "top1")
        return entry

    def values(self, split, metric):
        return [e[split][metric] for e in self.entries if e.get(split) and e[split].get(metric) is not None]

    def median(self, split="test", metric="top1"):
        return running_median(self.values(split, metric), self.median_window)

    def mean(self, split="test", metric="top1"):
        """Mean over the same window (ACR's papers report the mean of the last 20)."""
        return running_mean(self.values(split, metric), self.median_window)

    def best(self, split="valid", metric="top1"):
        values = self.values(split, metric)
        return max(values) if values else None

    def latest(self):
        return self.entries[-1] if self.entries else None


def results_payload(*, config, history, step, finished, wall_time_s, class_names=None, learner=None):
    """``learner``: what was trained, ``{"name", "config", "optimizer"}`` (see
    ``daso_tf.training.learner_arguments.learner_record``)."""
    latest = history.latest()
    window = history.median_window
    return {
        "experiment": config.name,
        "finished": bool(finished),
        "step": int(step),
        "train_steps": int(config.trainer.train_steps),
        f"test_top1_median{window}": history.median("test", "top1"),
        f"test_top1_la_median{window}": history.median("test", "top1_la"),
        f"valid_top1_median{window}": history.median("valid", "top1"),
        f"test_top1_mean{window}": history.mean("test", "top1"),
        "best_valid_top1": history.best("valid", "top1"),
        "final": latest,
        "per_class_accuracy": {
            "class_names": list(class_names) if class_names is not None else None,
            "test": latest["test"]["per_class"] if latest and latest.get("test") else None,
            "valid": latest["valid"]["per_class"] if latest and latest.get("valid") else None,
        },
        "history": history.entries,
        "config": config.to_dict(),
        "learner": learner,
        "provenance": provenance(),
        "wall_time_s": float(wall_time_s),
    }


def write_results(model_dir, **kwargs):
    return write_json_atomic(os.path.join(model_dir, RESULTS_FILE), results_payload(**kwargs))
