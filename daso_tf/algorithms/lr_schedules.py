"""Learning-rate schedules of the reference (``lib/solver/scheduler.py``)."""

import bisect

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="daso_tf")
class WarmupMultiStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then step decay (the reference's ``WarmupMultiStepLR``).

    At optimiser step t (0-based, Keras' ``optimizer.iterations``)::

        lr(t) = base * w(t) * gamma ** #{m in milestones : m <= t}
        w(t)  = warmup_factor * (1 - t / warmup_steps) + t / warmup_steps   (t < warmup_steps)
                1                                                           otherwise

    Args:
        base_learning_rate: base LR (0.1 for the Supervised baseline).
        warmup_steps: linear warm-up length (6250).
        milestones: increasing steps where the LR is multiplied by ``gamma`` ((199999, 225000)).
        gamma: decay factor (0.01).
        warmup_factor: LR factor at step 0 (0.0).
    """

    def __init__(self, base_learning_rate, warmup_steps, milestones, gamma, warmup_factor=0.0):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing; got {milestones}.")
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}.")
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.milestones = milestones
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.warmup_steps > 0:
            alpha = step / float(self.warmup_steps)
            warmup = ops.where(step < float(self.warmup_steps),
                               self.warmup_factor * (1.0 - alpha) + alpha, 1.0)
        else:
            warmup = ops.ones(())
        passed = ops.zeros(())
        for milestone in self.milestones:
            passed = passed + ops.cast(step >= float(milestone), "float32")
        return self.base_learning_rate * warmup * ops.power(self.gamma, passed)

    def value_at(self, step):
        """The same schedule evaluated in Python (for logs and tests)."""
        warmup = 1.0
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            warmup = self.warmup_factor * (1 - alpha) + alpha
        return self.base_learning_rate * warmup * self.gamma ** bisect.bisect_right(self.milestones, step)

    def get_config(self):
        return {"base_learning_rate": self.base_learning_rate, "warmup_steps": self.warmup_steps,
                "milestones": self.milestones, "gamma": self.gamma, "warmup_factor": self.warmup_factor}
