"""daso_tf.training.callbacks: step clock, progress lines, periodic triggers."""

import io

from daso_tf.training.callbacks import (PeriodicCheckpoint, PeriodicEvaluation, ProgressLogger, StepClock,
                                        format_duration)


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
