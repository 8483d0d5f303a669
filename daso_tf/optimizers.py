"""The reference optimiser: PyTorch's SGD with Nesterov momentum and coupled L2.

docs/algorithm.md section 1, step 9: SGD, Nesterov, momentum 0.9, constant learning rate 0.03, weight
decay 5e-4 added to every gradient (all trainable variables, BatchNorm scales/offsets
and biases included) — not Keras' decoupled ``weight_decay``. The update follows
``torch.optim.SGD`` operation for operation so a float64 replay matches the reference:

    g   = grad + weight_decay * w
    buf = momentum * buf + g          (buf starts at 0, so the first buf is g)
    g   = g + momentum * buf          (Nesterov)   |   g = buf   (classic momentum)
    w   = w - lr * g

On one device the update runs once per group of same-shaped variables with the same L2
(decayed or in ``l2_exclude``) on stacked tensors (``daso_tf.grouped_updates.stacked_map``: bit-identical, a few ops instead of a chain per
variable); under a ``tf.distribute`` strategy Keras' per-variable update (with its gradient
all-reduce) runs the same formula variable by variable.
"""

import keras
import tensorflow as tf
from keras import ops

from daso_tf.grouped_updates import stacked_map


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
        l2_exclude: variable names that get no L2 term: a variable whose (Keras, leaf) name
            contains one of them is excluded, e.g. ``("bias", "gamma", "beta")`` leaves
            biases and BatchNorm scales/offsets undecayed (ACR's parameter groups).
    """

    def __init__(self, learning_rate=0.03, momentum=0.9, nesterov=True, l2=5e-4, l2_exclude=(),
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
        self.l2_exclude = tuple(str(pattern) for pattern in l2_exclude)

    def l2_applies_to(self, variable):
        """Whether ``variable`` gets the L2 term (see ``l2_exclude``)."""
        return not any(pattern in variable.name for pattern in self.l2_exclude)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = [
            self.add_variable_from_reference(variable, "momentum") for variable in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        """One variable's update (the path under a distribution strategy)."""
        dtype = variable.dtype
        buffer = self.momentum_buffers[self._get_variable_index(variable)] if self.momentum else None
        step, new_buffer = self._sgd(tf.convert_to_tensor(variable), ops.cast(gradient, dtype),
                                     None if buffer is None else tf.convert_to_tensor(buffer),
                                     self._learning_rate_as(learning_rate, dtype),
                                     decay=self.l2_applies_to(variable))
        if buffer is not None:
            self.assign(buffer, new_buffer)
        self.assign_sub(variable, step)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Keras' TF optimiser all-reduces the gradients and updates every variable through
        # the strategy; with no strategy the variables are plain and the grouped update applies.
        if tf.distribute.has_strategy() or any(isinstance(g, tf.IndexedSlices) for g in grads):
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        # Decayed and undecayed variables (l2_exclude) are updated as separate groups.
        for decay in (True, False):
            indices = [i for i, v in enumerate(trainable_variables) if self.l2_applies_to(v) == decay]
            if indices:
                self._grouped_update([grads[i] for i in indices],
                                     [trainable_variables[i] for i in indices], learning_rate, decay)

    def _grouped_update(self, grads, trainable_variables, learning_rate, decay):
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        columns = [variables, [ops.cast(g, v.dtype) for g, v in zip(grads, variables)]]
        buffers = None
        if self.momentum:
            buffers = [self.momentum_buffers[self._get_variable_index(v)].value for v in trainable_variables]
            columns.append(buffers)

        def update(weight, gradient, buffer=None):
            step, new_buffer = self._sgd(weight, gradient, buffer,
                                         self._learning_rate_as(learning_rate, weight.dtype), decay)
            return (step,) if new_buffer is None else (step, new_buffer)

        steps, *new_buffers = stacked_map(update, *columns)
        for index, variable in enumerate(variables):
            if buffers is not None:
                buffers[index].assign(new_buffers[0][index])
            variable.assign_sub(steps[index])

    def _learning_rate_as(self, learning_rate, dtype):
        if self._constant_learning_rate is not None:
            return _constant(self._constant_learning_rate, dtype)
        return ops.cast(learning_rate, dtype)

    def _sgd(self, weight, gradient, buffer, learning_rate, decay):
        """torch.optim.SGD's arithmetic: (lr * g, new momentum buffer or None); L2 if ``decay``."""
        dtype = weight.dtype
        if self.l2 and decay:
            # g + l2 * w, written g - (-l2) * w (the same IEEE result): with an add here,
            # Grappler's AddOpsRewrite merges it with the momentum add below into one AddN
            # that sums in another order than torch (classic momentum, 1-ulp differences).
            gradient = ops.subtract(gradient, ops.multiply(_constant(-self.l2, dtype), weight))
        new_buffer = None
        if self.momentum:
            momentum = _constant(self.momentum, dtype)
            new_buffer = ops.add(ops.multiply(momentum, buffer), gradient)
            if self.nesterov:
                gradient = ops.add(gradient, ops.multiply(momentum, new_buffer))
            else:
                gradient = new_buffer
        return ops.multiply(learning_rate, gradient), new_buffer

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov, "l2": self.l2,
                       "l2_exclude": list(self.l2_exclude)})
        if self._constant_learning_rate is not None:
            config["learning_rate"] = self._constant_learning_rate  # not its float32 rounding
        return config


def reference_sgd(learning_rate=0.03, momentum=0.9, nesterov=True, l2=5e-4, l2_exclude=()):
    """The optimiser of every DASO paper setting (docs/algorithm.md section 1)."""
    return CoupledL2SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, l2=l2,
                        l2_exclude=l2_exclude)
