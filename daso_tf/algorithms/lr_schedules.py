"""Learning-rate schedules: the DASO reference's (``lib/solver/scheduler.py``) and ACR's cosine."""

import bisect
import math

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


@keras.saving.register_keras_serializable(package="daso_tf")
class CosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """FixMatch-pytorch's cosine decay (``get_cosine_schedule_with_warmup``; ACR uses it
    without warm-up). At optimiser step t (0-based)::

        lr(t) = base * t / warmup_steps                                   (t < warmup_steps)
        lr(t) = base * max(0, cos(pi * num_cycles * (t - warmup_steps) / (total_steps - warmup_steps)))

    With ``num_cycles`` 7/16 the LR ends at ``base * cos(7 pi / 16)`` ~ 0.2 * base.

    Args:
        base_learning_rate: base LR (0.03).
        total_steps: the run's length T.
        num_cycles: 7/16.
        warmup_steps: linear warm-up length (0).
    """

    def __init__(self, base_learning_rate, total_steps, num_cycles=7.0 / 16.0, warmup_steps=0):
        if int(total_steps) < 1 or int(warmup_steps) < 0:
            raise ValueError(f"total_steps must be >= 1 and warmup_steps >= 0; got {total_steps}, {warmup_steps}.")
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.num_cycles = float(num_cycles)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(1, self.warmup_steps))
        progress = (step - self.warmup_steps) / float(max(1, self.total_steps - self.warmup_steps))
        decay = ops.maximum(0.0, ops.cos(math.pi * self.num_cycles * progress))
        factor = ops.where(step < float(self.warmup_steps), step / warmup, decay)
        return self.base_learning_rate * factor

    def value_at(self, step):
        """The same schedule evaluated in Python (for logs and tests)."""
        if step < self.warmup_steps:
            return self.base_learning_rate * step / max(1, self.warmup_steps)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.base_learning_rate * max(0.0, math.cos(math.pi * self.num_cycles * progress))

    def get_config(self):
        return {"base_learning_rate": self.base_learning_rate, "total_steps": self.total_steps,
                "num_cycles": self.num_cycles, "warmup_steps": self.warmup_steps}
