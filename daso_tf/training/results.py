"""``<model_dir>/results.json``: what a run reports (written by the chief only).

Rewritten at every evaluation and checkpoint step (``finished: false``) and at the end of
training, always durably and atomically (``io_utils.write_json``), so a killed run leaves a
readable file.
It holds two histories, both reloaded on resume and cut at the restored step (the resumed
run recomputes what came after the last checkpoint identically):

- ``history``: one entry per evaluation (validation and test metrics, running median-20);
- ``training``: one entry per training window, ending at every evaluation or checkpoint
  step (``TrainingHistory``; what ``python -m daso_tf.tools.report`` plots): mean losses
  and mask rate of the window, and per-class pseudo-label counts of the samples that passed
  the confidence mask, from which precision and recall follow.

plus ``labeled_counts`` / ``unlabeled_counts`` (the true unlabeled class counts, null where
unknown, e.g. STL-10) of the run's split.

A results.json that exists but cannot be read stops the resume with an error naming it
(the median-20 history it holds is never reset silently).
"""

import json
import os

from daso_tf import io_utils
from daso_tf.provenance import provenance
from daso_tf.training.evaluation import running_mean, running_median
from daso_tf.training.model_dir import RunDirectoryError

RESULTS_FILE = "results.json"


class UnreadableResultsError(RunDirectoryError):
    """results.json exists but cannot be parsed."""


def read_results(model_dir):
    """The content of ``<model_dir>/results.json``, or None when there is none.

    Raises UnreadableResultsError (one line naming the file) when it exists but cannot be read.
    """
    path = os.path.join(model_dir, RESULTS_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            payload = json.load(f)
        if not isinstance(payload, dict) or not isinstance(payload.get("history", []), list):
            raise ValueError("expected a JSON object with a history list")
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise UnreadableResultsError(
            f"{path} is unreadable ({reason}); it holds this run's evaluation history (the median over the "
            "last evaluations depends on it). Restore it from a backup, or move it away to resume with an "
            "empty history") from None
    return payload


def _entries_up_to(payload, key, up_to_step):
    entries = (payload or {}).get(key) or []
    return [e for e in entries if isinstance(e, dict) and e.get("step", 0) <= up_to_step]


class EvaluationHistory:
    """The list of evaluations of one run: ``[{"step", "valid": {...}, "test": {...}}]``."""

    def __init__(self, entries=(), median_window=20):
        self.entries = list(entries)
        self.median_window = median_window

    @classmethod
    def load(cls, model_dir, *, up_to_step, median_window=20):
        """History from ``results.json``, keeping evaluations at steps <= ``up_to_step``."""
        return cls.from_results(read_results(model_dir), up_to_step=up_to_step, median_window=median_window)

    @classmethod
    def from_results(cls, payload, *, up_to_step, median_window=20):
        """History from a results.json payload (or None), keeping steps <= ``up_to_step``."""
        return cls(_entries_up_to(payload, "history", up_to_step), median_window)

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
        return cls.from_results(read_results(model_dir), up_to_step=up_to_step)

    @classmethod
    def from_results(cls, payload, *, up_to_step):
        """Windows from a results.json payload (or None) that end at steps <= ``up_to_step``."""
        return cls(_entries_up_to(payload, "training", up_to_step))

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
    return io_utils.write_json(os.path.join(model_dir, RESULTS_FILE), results_payload(**kwargs))
