"""daso_tf.training.callbacks: step clock, progress lines, periodic triggers."""

import io
import types

import numpy as np
import pytest

from daso_tf.training.callbacks import (PeriodicCheckpoint, PeriodicEvaluation, ProgressLogger, StepClock,
                                        TrainingSummaries, format_duration)


def _drive(callbacks, clock, first_step, epochs, steps_per_epoch, logs=None):
    """What Keras fit does with the callbacks, for one segment."""
    clock.begin_segment(first_step, steps_per_epoch)
    for callback in callbacks:
        callback.on_train_begin()
    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            for callback in callbacks:
                callback.on_train_batch_end(batch, logs or {"loss": 1.5, "mask": 0.25})
        for callback in callbacks:
            callback.on_epoch_end(epoch)


def test_clock_progress_and_triggers_follow_the_global_step():
    clock = StepClock(130)
    stream = io.StringIO()
    evaluated, saved = [], []

    class FakeManager:
        def save(self, step):
            saved.append(step)

    callbacks = [clock, ProgressLogger(clock, total_steps=400, log_interval=50, stream=stream),
                 PeriodicEvaluation(clock, 100, 400, evaluated.append),
                 PeriodicCheckpoint(clock, 50, 400, FakeManager(), log=lambda *_: None)]
    # A run resumed at step 130: one short segment to 150, then epochs of 50.
    _drive(callbacks, clock, 130, 1, 20)
    _drive(callbacks, clock, 150, 5, 50)
    assert clock.step == 400
    assert evaluated == [200, 300, 400]
    assert saved == [150, 200, 250, 300, 350, 400]
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{s}/400" for s in range(150, 401, 50)]
    assert "loss 1.5000" in lines[0] and "mask 0.2500" in lines[0] and "steps/s ETA" in lines[0]


def test_format_duration():
    assert format_duration(59.6) == "1m00s"
    assert format_duration(3 * 3600 + 125) == "3h02m"
    assert format_duration(float("nan")) == "?"


class _RunningMeans:
    """The model's on-device running means of the step logs, as the train step keeps them."""

    def __init__(self):
        self.values = []

    def reset_state(self):
        self.values = []


def test_summaries_average_each_log_window_across_epoch_ends(tmp_path):
    import tensorflow as tf

    clock = StepClock(0)
    writer = tf.summary.create_file_writer(str(tmp_path))
    summaries = TrainingSummaries(clock, writer, log_interval=3, class_names=["a", "b"])
    model = types.SimpleNamespace(step_log_means=_RunningMeans(),
                                  optimizer=types.SimpleNamespace(learning_rate=0.03))
    summaries.set_model(model)
    means = model.step_log_means
    # What fit does: 2 epochs of 4 steps, the means reset when an epoch begins; step t logs t.
    clock.begin_segment(0, 4)
    summaries.on_train_begin()
    for epoch in range(2):
        means.reset_state()
        clock.on_epoch_begin(epoch)
        summaries.on_epoch_begin(epoch)
        for batch in range(4):
            means.values.append(clock.step + 1.0)
            logs = {"loss": float(np.mean(means.values)), "mask": 0.5}
            clock.on_train_batch_end(batch, logs)
            summaries.on_train_batch_end(batch, logs)
        summaries.on_epoch_end(epoch)
    summaries.on_train_end()
    writer.flush()
    written = {}
    for path in tmp_path.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "train/loss":
                    written[event.step] = float(tf.make_ndarray(value.tensor))
    # Windows 1-3, 4-6 (across the epoch end after step 4: its first part kept on the host), 7-8.
    assert written == pytest.approx({3: 2.0, 6: 5.0, 8: 7.5})


class _DiagnosticModel:
    """Stands in for a learner: counts its diagnostics reads, which reset what it accumulated."""

    def __init__(self):
        import types

        self.reads = 0
        self.optimizer = types.SimpleNamespace(learning_rate=0.03)
        self.step_log_means = _RunningMeans()
        self.pending = []

    def pseudo_label_diagnostics(self):
        self.reads += 1
        confusion = sum(self.pending) if self.pending else [[0, 0], [0, 0]]
        self.pending = []
        passed = int(sum(map(sum, confusion)))
        return {"mask_rate": 0.5, "num_selected": passed, "num_unlabeled": 2 * passed, "precision": [1.0, 1.0],
                "recall": [1.0, 1.0], "selected": [0, 0], "confusion": confusion}


def test_summaries_read_the_diagnostics_once_for_tensorboard_and_the_record():
    import numpy as np
    import tensorflow as tf

    from daso_tf.training.callbacks import TrainingSummaries

    clock = StepClock(0)
    summaries = TrainingSummaries(clock, tf.summary.create_noop_writer(), log_interval=2, class_names=["a", "b"])
    model = _DiagnosticModel()
    summaries.set_model(model)
    clock.begin_segment(0, 3)
    # rows: true class, columns: pseudo-label (selected samples only)
    confusions = [np.array([[2, 1], [0, 1]]), np.array([[1, 0], [1, 0]]), np.array([[0, 0], [0, 3]])]
    means = model.step_log_means
    for batch, (loss, confusion) in enumerate(zip((1.0, 2.0, 6.0), confusions)):
        model.pending.append(confusion)
        means.values.append((loss, 0.25 * (batch + 1)))
        clock.on_train_batch_end(batch)
        # the logs are the means since the last reset, as the train step reports them
        summaries.on_train_batch_end(batch, dict(zip(("loss", "mask"), np.mean(means.values, axis=0).tolist())))
    assert model.reads == 1  # the log window at step 2
    entry = summaries.take_record()  # closes the partial log window: one more read, for both uses
    assert model.reads == 2
    assert (entry["step"], entry["start_step"], entry["learning_rate"]) == (3, 0, 0.03)
    assert entry["loss"] == 3.0 and entry["mask"] == 0.5  # means over the 3 steps
    counts = entry["pseudo_labels"]
    # summed: [[3, 1], [1, 4]] -> 9 selected of 18
    assert (counts["num_selected"], counts["num_unlabeled"], counts["mask_rate"]) == (9, 18, 0.5)
    assert counts["selected"] == [4, 5] and counts["correct"] == [3, 4] and counts["selected_by_true_class"] == [4, 5]
    assert counts["precision"] == [0.75, 0.8] and counts["recall"] == [0.75, 0.8]
    empty = summaries.take_record()  # nothing since: no read, no counts
    assert model.reads == 2 and (empty["step"], empty["start_step"], empty["pseudo_labels"]) == (3, 3, None)


def test_record_steps_are_the_evaluation_and_checkpoint_steps():
    from daso_tf.training.callbacks import PeriodicRecord

    clock = StepClock(0)
    recorded = []
    callbacks = [clock, PeriodicRecord(clock, (6, 4), 14, recorded.append)]
    _drive(callbacks, clock, 0, 7, 2)  # epochs end every gcd(6, 4) = 2 steps
    assert recorded == [4, 6, 8, 12, 14]


def test_undefined_rates_are_null_in_the_record():
    from daso_tf.training.callbacks import TrainingWindow

    window = TrainingWindow(10)
    window.add_diagnostics({"num_selected": 1, "num_unlabeled": 4, "confusion": [[0, 1], [0, 0]]})
    entry = window.entry(12, learning_rate=float("nan"))
    assert entry["learning_rate"] is None
    assert entry["pseudo_labels"]["precision"] == [None, 0.0] and entry["pseudo_labels"]["recall"] == [0.0, None]
    assert entry["pseudo_labels"]["mask_rate"] == 0.25
