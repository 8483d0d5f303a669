"""``<model_dir>/results.json``: what a run reports (written by the chief only).

Rewritten at every evaluation and checkpoint step (``finished: false``) and at the end of
training, always atomically (temp file + rename), so a killed run leaves a readable file.
It holds two histories, both reloaded on resume and cut at the restored step (the resumed
run recomputes what came after the last checkpoint identically):

- ``history``: one entry per evaluation (validation and test metrics, running median-20);
- ``training``: one entry per training window, ending at every evaluation or checkpoint
  step (``TrainingHistory``; what ``python -m daso_tf.tools.report`` plots): mean losses
  and mask rate of the window, and per-class pseudo-label counts of the samples that passed
  the confidence mask, from which precision and recall follow.

plus ``labeled_counts`` / ``unlabeled_counts`` (the true unlabeled class counts, null where
unknown, e.g. STL-10) of the run's split.
"""

import json
import os

from daso_tf.provenance import provenance
from daso_tf.training.evaluation import running_mean, running_median

RESULTS_FILE = "results.json"


def write_bytes_atomic(path, data):
    """Writes ``data`` to ``path`` through a temporary sibling and a rename (never half a file)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def write_json_atomic(path, payload):
    text = json.dumps(payload, indent=2, allow_nan=False, default=_json_default)
    return write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_results(model_dir):
    """The parsed ``results.json`` of ``model_dir``, or None when absent or unreadable."""
    try:
        with open(os.path.join(model_dir, RESULTS_FILE)) as f:
            payload = json.load(f)
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _entries_up_to(model_dir, key, up_to_step):
    # An unreadable file starts the record afresh: the training state is in the checkpoints.
    entries = (read_results(model_dir) or {}).get(key) or []
    return [e for e in entries if isinstance(e, dict) and e.get("step", 0) <= up_to_step]


class EvaluationHistory:
    """The list of evaluations of one run: ``[{"step", "valid": {...}, "test": {...}}]``."""

    def __init__(self, entries=(), median_window=20):
        self.entries = list(entries)
        self.median_window = median_window

    @classmethod
    def load(cls, model_dir, *, up_to_step, median_window=20):
        """History from ``results.json``, keeping evaluations at steps <= ``up_to_step``."""
        return cls(_entries_up_to(model_dir, "history", up_to_step), median_window)

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


class TrainingHistory:
    """The training windows of one run, oldest first (see ``callbacks.TrainingWindow``)."""

    def __init__(self, entries=()):
        self.entries = list(entries)

    @classmethod
    def load(cls, model_dir, *, up_to_step):
        """Windows from ``results.json`` that end at steps <= ``up_to_step``."""
        return cls(_entries_up_to(model_dir, "training", up_to_step))

    def append(self, entry):
        self.entries = [e for e in self.entries if e["step"] < entry["step"]] + [entry]
        return entry


def results_payload(*, config, history, step, finished, wall_time_s, class_names=None, training=None,
                    labeled_counts=None, unlabeled_counts=None, learner=None):
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
        "labeled_counts": _int_list(labeled_counts),
        "unlabeled_counts": _int_list(unlabeled_counts),
        "history": history.entries,
        "training": training.entries if training is not None else [],
        "config": config.to_dict(),
        "learner": learner,
        "provenance": provenance(),
        "wall_time_s": float(wall_time_s),
    }


def _int_list(values):
    return None if values is None else [int(v) for v in values]


def write_results(model_dir, **kwargs):
    return write_json_atomic(os.path.join(model_dir, RESULTS_FILE), results_payload(**kwargs))
