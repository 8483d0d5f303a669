"""daso_tf.training.loop: fit segment planning, partial evaluation, runtime auto switches."""

import math

import pytest

import types

from daso_tf.config import ExperimentConfig
from daso_tf.training.loop import plan_segments, resolve_steps_per_execution, resolve_switches


@pytest.mark.parametrize("start, total, period, expected", [
    (0, 1000, 500, [(0, 2, 500)]),
    (0, 1050, 500, [(0, 2, 500), (1000, 1, 50)]),
    (130, 1000, 100, [(130, 1, 70), (200, 8, 100)]),
    (130, 150, 100, [(130, 1, 20)]),
    (1000, 1000, 100, []),
    (1200, 1000, 100, []),
])
def test_plan_segments(start, total, period, expected):
    segments = plan_segments(start, total, period)
    assert segments == expected
    # Epoch ends cover the range exactly and land on multiples of period (or the end).
    ends, step = [], start
    for first, epochs, steps in segments:
        assert first == step
        for _ in range(epochs):
            step += steps
            ends.append(step)
    assert step == max(start, total)
    assert all(e % period == 0 or e == total for e in ends)


def test_plan_segments_never_crosses_a_boundary():
    # CReST generations start at 300 and 600: fit calls end there; epochs still end on
    # multiples of the period (or a boundary, or the end)
    assert plan_segments(0, 1000, 200, boundaries=(300, 600, 1000)) == [
        (0, 1, 200), (200, 1, 100), (300, 1, 100), (400, 1, 200), (600, 2, 200)]
    assert plan_segments(450, 1000, 200, boundaries=(300, 600)) == [(450, 1, 150), (600, 2, 200)]


def test_partial_evaluation_samples_every_class():
    import types

    import numpy as np

    from daso_tf.config import ExperimentConfig
    from daso_tf.training.loop import make_eval_datasets

    config = ExperimentConfig()
    config.trainer.eval_batches, config.trainer.eval_batch_size = 2, 25
    labels = np.repeat(np.arange(10), 100)  # stored class by class, as the sources do
    images = np.zeros((1000, 4, 4, 3), np.uint8)
    config.data.image_size = 4
    lt_data = types.SimpleNamespace(valid_images=images[:0], valid_labels=labels[:0],
                                    test_images=images, test_labels=labels)
    datasets = make_eval_datasets(config, lt_data)
    seen = np.concatenate([batch_labels.numpy() for _, batch_labels in datasets["test"]])
    assert len(seen) == 50
    assert len(set(seen.tolist())) >= 8  # the first 50 stored images would be class 0 only
    again = np.concatenate([b.numpy() for _, b in make_eval_datasets(config, lt_data)["test"]])
    np.testing.assert_array_equal(seen, again)  # the same sample at every evaluation


def _strategy(replicas=1, multi_worker=False):
    extended = types.SimpleNamespace(_in_multi_worker_mode=lambda: multi_worker)
    return types.SimpleNamespace(num_replicas_in_sync=replicas, extended=extended)


@pytest.mark.parametrize("intervals, total, start, requested, expected", [
    ((50, 500, 500), 250_000, 0, "auto", 50),      # the paper settings: one host round trip per log line
    ((50, 500, 500), 250_000, 130, "auto", 10),    # resumed at step 130: epochs of 70 then 500
    ((2, 4, 2), 8, 0, "auto", 2),
    ((2, 4, 2), 7, 0, "auto", 1),                  # a last epoch of 3 steps
    ((300, 600, 600), 3000, 0, "auto", 100),       # capped: the largest divisor <= 100
    ((210, 420, 420), 4200, 0, "auto", 70),
    ((50, 500, 500), 1010, 0, 10, 10),             # explicit: kept where it divides the ends
    ((50, 500, 500), 1005, 0, 10, 5),              # ... else reduced (no epoch overshoots)
])
def test_steps_per_execution_divides_every_epoch_and_log_window(intervals, total, start, requested, expected):
    config = ExperimentConfig()
    trainer = config.trainer
    trainer.log_interval, trainer.eval_interval, trainer.checkpoint_interval = intervals
    trainer.train_steps, config.runtime.steps_per_execution = total, requested
    every = resolve_steps_per_execution(config, start, _strategy())
    assert every == expected
    period = math.gcd(trainer.eval_interval, trainer.checkpoint_interval)
    for _, _, steps_per_epoch in plan_segments(start, total, period):
        assert steps_per_epoch % every == 0
    assert resolve_steps_per_execution(config, start, _strategy(2, multi_worker=True)) == (
        1 if requested == "auto" else expected)


@pytest.mark.parametrize("requested", ["auto", 50])
def test_steps_per_execution_stops_at_every_generation_boundary(requested):
    # CReST+: 5 generations of 50,000 steps (paper), and of 1,000 steps in a 5,000-step run
    config = ExperimentConfig()
    config.runtime.steps_per_execution = requested
    assert resolve_steps_per_execution(config, 0, _strategy(), boundaries=[50_000, 100_000, 150_000, 200_000]) == 50
    config.trainer.train_steps, config.trainer.log_interval = 5000, 50
    assert resolve_steps_per_execution(config, 0, _strategy(), boundaries=[1000, 2000, 3000, 4000]) == 50
    # a generation starting at step 1 (2 steps, 2 generations): one step per execution
    config.trainer.train_steps = config.trainer.log_interval = config.trainer.eval_interval = 2
    config.trainer.checkpoint_interval = 2
    assert resolve_steps_per_execution(config, 0, _strategy(), boundaries=[1]) == 1
    assert resolve_steps_per_execution(config, 0, _strategy()) == 2  # without the boundary


def test_auto_switches_are_on_with_a_gpu_and_one_replica():
    import tensorflow as tf

    gpu = bool(tf.config.list_logical_devices("GPU"))
    config = ExperimentConfig()
    assert resolve_switches(config, _strategy()) == (gpu, gpu)
    assert resolve_switches(config, _strategy(2)) == (False, False)
    config.data.augmentation = "keras_cv"  # host-only augmentation
    assert resolve_switches(config, _strategy()) == (gpu, False)
    config.runtime.jit_compile, config.runtime.augment_on_device = True, True
    assert resolve_switches(config, _strategy(2)) == (True, True)  # explicit values are kept
