"""daso_tf.training.results: history, median-20 and the atomically written results.json."""

import json

from daso_tf.config import ExperimentConfig
from daso_tf.training.results import EvaluationHistory, write_results


def _metrics(top1):
    return {"top1": top1, "top1_la": top1 + 1, "per_class": [top1, top1], "head": top1, "medium": None, "tail": top1}


def test_history_median_and_resume_cut(tmp_path):
    history = EvaluationHistory(median_window=3)
    for step, top1 in ((10, 50.0), (20, 70.0), (30, 60.0), (40, 90.0)):
        entry = history.append(step, _metrics(top1 - 5), _metrics(top1))
    assert entry["test_top1_median"] == 70.0  # median of 70, 60, 90
    assert entry["test_top1_mean"] == (70.0 + 60.0 + 90.0) / 3  # ACR's summary: the mean
    assert history.best("valid") == 85.0
    config = ExperimentConfig(name="tiny")
    write_results(str(tmp_path), config=config, history=history, step=40, finished=True, wall_time_s=1.5,
                  class_names=["a", "b"])
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["test_top1_median3"] == 70.0 and payload["finished"] is True
    assert payload["test_top1_mean3"] == (70.0 + 60.0 + 90.0) / 3
    assert payload["per_class_accuracy"]["test"] == [90.0, 90.0]
    assert payload["config"]["name"] == "tiny" and payload["wall_time_s"] == 1.5
    assert [e["step"] for e in payload["history"]] == [10, 20, 30, 40]
    assert not list(tmp_path.glob("*.tmp-*"))
    # A run resumed from the step-25 checkpoint recomputes the evaluations after it.
    resumed = EvaluationHistory.load(str(tmp_path), up_to_step=25, median_window=3)
    assert [e["step"] for e in resumed.entries] == [10, 20]


def test_append_same_step_replaces():
    history = EvaluationHistory()
    history.append(10, _metrics(1.0), _metrics(1.0))
    history.append(10, _metrics(2.0), _metrics(2.0))
    assert len(history.entries) == 1 and history.median() == 2.0


def test_training_windows_and_class_counts_are_recorded_and_cut_on_resume(tmp_path):
    from daso_tf.training.results import TrainingHistory

    training = TrainingHistory()
    for step in (2, 4, 6):
        training.append({"step": step, "start_step": step - 2, "loss": float(step)})
    write_results(str(tmp_path), config=ExperimentConfig(name="tiny"), history=EvaluationHistory(), step=6,
                  finished=False, wall_time_s=1.0, training=training, labeled_counts=[5, 2],
                  unlabeled_counts=None)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["labeled_counts"] == [5, 2] and payload["unlabeled_counts"] is None
    assert [e["loss"] for e in payload["training"]] == [2.0, 4.0, 6.0]
    resumed = TrainingHistory.load(str(tmp_path), up_to_step=4)  # checkpoint at step 4
    assert [e["step"] for e in resumed.entries] == [2, 4]
    resumed.append({"step": 6, "start_step": 4, "loss": 6.5})  # recomputed after the resume
    assert [e["loss"] for e in resumed.entries] == [2.0, 4.0, 6.5]
    assert TrainingHistory.load(str(tmp_path / "missing"), up_to_step=4).entries == []
