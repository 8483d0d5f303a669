"""StepLogMeans: running means of a train step's scalar logs, kept on the device."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="daso_tf")
class StepLogMeans(keras.metrics.Metric):
    """Running means of the scalar logs of every train step since the last reset.

    The train step adds its scalars (``loss``, ``loss_x``, ``mask``, ...) to on-device sums
    each step, with no host round trip; a reader (``model.fit``'s logs, the TensorBoard
    callback every ``log_interval`` steps) sees the window's means whenever it looks. The
    names are fixed by the first update (a learner's log keys); at most ``capacity``.

    Like every Keras metric its variables are summed over replicas when read outside a
    replica, so under a distribution strategy the means span all replicas.
    """

    def __init__(self, capacity=16, name="step_log_means", **kwargs):
        super().__init__(name=name, **kwargs)
        self.capacity = int(capacity)
        # float64: a window's means equal the host's float64 means of the per-step float32 logs
        # (float32 sums would be off by an ulp: mean(loss) != mean(loss_x) + mean(loss_u) + ...).
        self.sums = self.add_variable(shape=(self.capacity,), initializer="zeros", dtype="float64", name="sums")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")
        self.names = None

    def update_state(self, logs):
        """Adds one step's ``{name: scalar}`` logs."""
        names = tuple(logs)
        if self.names is None:
            if len(names) > self.capacity:
                raise ValueError(f"StepLogMeans holds {self.capacity} scalars; the train step logs "
                                 f"{len(names)}: {names}.")
            self.names = names
        elif names != self.names:
            raise ValueError(f"The train step's logs changed from {list(self.names)} to {list(names)}.")
        values = ops.stack([ops.cast(ops.reshape(logs[name], ()), "float64") for name in names])
        self.sums.assign_add(ops.pad(values, [[0, self.capacity - len(names)]]))
        self.count.assign_add(ops.ones((), "float64"))

    def result(self):
        """``{name: mean since the last reset}`` (0 before the first step)."""
        means = self.sums / ops.maximum(self.count, 1.0)
        return {name: means[index] for index, name in enumerate(self.names or ())}

    def get_config(self):
        return {**super().get_config(), "capacity": self.capacity}
