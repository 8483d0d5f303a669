"""The reference optimiser: PyTorch's SGD with Nesterov momentum and coupled L2.

docs/algorithm.md section 1, step 9: SGD, Nesterov, momentum 0.9, constant learning rate 0.03, weight
decay 5e-4 added to every gradient (all trainable variables, BatchNorm scales/offsets
and biases included) — not Keras' decoupled ``weight_decay``. The update follows
``torch.optim.SGD`` operation for operation so a float64 replay matches the reference:

    g   = grad + weight_decay * w
    buf = momentum * buf + g          (buf starts at 0, so the first buf is g)
    g   = g + momentum * buf          (Nesterov)   |   g = buf   (classic momentum)
    w   = w - lr * g
"""

import keras
from keras import ops


def _constant(value, dtype):
    # ops.cast(python_float, "float64") would round through float32 first.
    return ops.convert_to_tensor(value, dtype=dtype)


@keras.saving.register_keras_serializable(package="daso_tf")
class CoupledL2SGD(keras.optimizers.Optimizer):
    """SGD with (Nesterov) momentum and coupled L2 weight decay, as torch.optim.SGD.

    Args:
        learning_rate: float or a ``keras.optimizers.schedules.LearningRateSchedule``.
        momentum: momentum factor in [0, 1).
        nesterov: use Nesterov momentum.
        l2: coefficient of the L2 term added to every gradient (torch's ``weight_decay``).
    """

    def __init__(self, learning_rate=0.03, momentum=0.9, nesterov=True, l2=5e-4,
                 name="coupled_l2_sgd", **kwargs):
        if "weight_decay" in kwargs and kwargs["weight_decay"]:
            raise ValueError(
                "CoupledL2SGD applies coupled L2 through `l2`; Keras' decoupled `weight_decay` "
                "is not the reference behaviour. Pass l2=... instead."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}.")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0; got {l2}.")
        # Keras keeps the learning rate in a float32 variable; a float64 replay needs the
        # constant itself (0.03 in float32 is off by 1e-9, enough to flip pseudo-labels).
        self._constant_learning_rate = (
            float(learning_rate) if isinstance(learning_rate, (int, float)) else None
        )
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2 = float(l2)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = [
            self.add_variable_from_reference(variable, "momentum") for variable in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        if self._constant_learning_rate is not None:
            learning_rate = _constant(self._constant_learning_rate, dtype)
        else:
            learning_rate = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        if self.l2:
            gradient = ops.add(gradient, ops.multiply(_constant(self.l2, dtype), variable))
        if self.momentum:
            buffer = self.momentum_buffers[self._get_variable_index(variable)]
            momentum = _constant(self.momentum, dtype)
            new_buffer = ops.add(ops.multiply(momentum, buffer), gradient)
            self.assign(buffer, new_buffer)
            if self.nesterov:
                gradient = ops.add(gradient, ops.multiply(momentum, new_buffer))
            else:
                gradient = new_buffer
        self.assign_sub(variable, ops.multiply(learning_rate, gradient))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov, "l2": self.l2})
        if self._constant_learning_rate is not None:
            config["learning_rate"] = self._constant_learning_rate  # not its float32 rounding
        return config


def reference_sgd(learning_rate=0.03, momentum=0.9, nesterov=True, l2=5e-4):
    """The optimiser of every DASO paper setting (docs/algorithm.md section 1)."""
    return CoupledL2SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, l2=l2)
