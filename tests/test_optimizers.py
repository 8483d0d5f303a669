"""CoupledL2SGD follows torch.optim.SGD operation for operation, grouped or per variable."""

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.optimizers import CoupledL2SGD

SHAPES = [(3, 3, 2, 4), (4,), (4,), (3, 3, 4, 4), (4, 3), (3,)]
# Two same-shaped (4,) variables, one excluded by l2_exclude=("bias",) and one not.
NAMES = ["kernel", "bias", "gamma", "kernel", "kernel", "bias"]


def torch_sgd(weights, gradients, lr, momentum, nesterov, l2, decayed=None):
    """torch.optim.SGD.step (weight_decay, momentum, dampening 0) re-implemented in NumPy;
    ``decayed[i]`` False: variable i is in a parameter group with weight_decay 0."""
    decayed = decayed or [True] * len(weights)
    buffers = [None] * len(weights)
    for step_gradients in gradients:
        for i, (w, g) in enumerate(zip(weights, step_gradients)):
            d_p = g + l2 * w if l2 and decayed[i] else g
            if momentum:
                buffers[i] = d_p if buffers[i] is None else momentum * buffers[i] + d_p
                d_p = d_p + momentum * buffers[i] if nesterov else buffers[i]
            weights[i] = w - lr * d_p
    return weights, buffers


def run_optimizer(weights, gradients, strategy=None, **options):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        variables = [tf.Variable(w, name=name) for w, name in zip(weights, NAMES)]
        optimizer = CoupledL2SGD(**options)
        optimizer.build(variables)

    @tf.function
    def apply(step_gradients):
        def replica_fn(step_gradients):
            optimizer.apply(step_gradients, variables)
        strategy.run(replica_fn, args=(step_gradients,))

    for step_gradients in gradients:
        apply([tf.constant(g) for g in step_gradients])
    return [v.numpy() for v in variables], optimizer


def problem(dtype, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    gradients = [[rng.normal(size=s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return weights, gradients


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("momentum, nesterov, l2, l2_exclude", [
    (0.9, True, 5e-4, ()), (0.9, False, 5e-4, ()), (0.0, False, 0.0, ()), (0.9, True, 5e-4, ("bias",))])
def test_grouped_update_is_torch_sgd_bit_for_bit(dtype, momentum, nesterov, l2, l2_exclude):
    weights, gradients = problem(dtype)
    got, optimizer = run_optimizer(weights, gradients, learning_rate=0.03, momentum=momentum,
                                   nesterov=nesterov, l2=l2, l2_exclude=l2_exclude)
    decayed = [not any(pattern in name for pattern in l2_exclude) for name in NAMES]
    # NumPy with the same constants in the variable dtype: the same roundings per element.
    c = {k: np.asarray(v, dtype) for k, v in dict(lr=0.03, momentum=momentum, l2=l2).items()}
    expected, buffers = torch_sgd([w.copy() for w in weights], gradients, c["lr"], c["momentum"], nesterov, c["l2"],
                                 decayed)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    if momentum:
        for buffer, e in zip(optimizer.momentum_buffers, buffers):
            np.testing.assert_array_equal(buffer.numpy(), e)


@pytest.mark.parametrize("l2_exclude", [(), ("bias",)])
def test_per_variable_path_under_a_strategy_equals_the_grouped_path(l2_exclude):
    weights, gradients = problem("float32", seed=1)
    grouped, _ = run_optimizer(weights, gradients, l2_exclude=l2_exclude)
    per_variable, _ = run_optimizer(weights, gradients, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
                                    l2_exclude=l2_exclude)
    for a, b in zip(grouped, per_variable):
        np.testing.assert_array_equal(a, b)


def test_one_update_per_shape_group_not_per_variable():
    variables = [tf.Variable(np.zeros(s, np.float32)) for s in SHAPES * 4]  # 24 variables, 4 shapes
    optimizer = CoupledL2SGD()
    optimizer.build(variables)
    graph = tf.function(lambda: optimizer.apply([tf.ones_like(v) for v in variables], variables)
                        ).get_concrete_function().graph
    multiplies = sum(op.type == "Mul" for op in graph.get_operations())
    # l2 * w, momentum * buf, momentum * buf', lr * g: 4 per group (per variable: 96).
    assert multiplies <= 4 * len(set(SHAPES)) + 2
