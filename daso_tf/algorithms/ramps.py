"""Consistency-weight ramp-ups of the reference (``cons_rampup_func``)."""

from keras import ops


def linear_rampup(step, rampup_steps, dtype="float32"):
    """``min(step / rampup_steps, 1)`` (1 when ``rampup_steps`` is 0); ``step`` is 0-based.

    The reference ramps MixMatch / ReMixMatch over 0.016 * 250k = 4000 steps and
    MeanTeacher over 0.4 * 250k = 100k steps (``CONS_RAMPUP_SCHEDULE: linear``).
    """
    if rampup_steps <= 0:
        return ops.ones((), dtype)
    step = ops.cast(step, dtype)
    return ops.minimum(step / ops.convert_to_tensor(float(rampup_steps), dtype), ops.ones((), dtype))
