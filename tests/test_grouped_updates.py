"""daso_tf.grouped_updates.stacked_map: per-item results, bit for bit, from a few stacked ops."""

import numpy as np
import pytest
import tensorflow as tf

from daso_tf.grouped_updates import stacked_map

SHAPES = [(3, 3, 4, 8), (8,), (3, 3, 4, 8), (8,), (5, 2), (8,), (3, 3, 4, 8)]


def _average(ema, weight, decay=0.9990000128746033):
    d = tf.cast(decay, ema.dtype)
    return (d * ema + tf.cast(1 - decay, ema.dtype) * weight,)


def _items(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(dtype) for shape in SHAPES]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_equal_the_per_item_function_bit_for_bit(dtype):
    emas, weights = _items(dtype, 0), _items(dtype, 1)
    (stacked,) = stacked_map(_average, emas, weights)
    decay = np.asarray(0.9990000128746033, dtype)
    for got, ema, weight in zip(stacked, emas, weights):
        # NumPy does the same two products and one sum per element.
        np.testing.assert_array_equal(got.numpy(), decay * ema + np.asarray(1 - 0.9990000128746033, dtype) * weight)


def test_several_results_mixed_dtypes_and_order_are_kept():
    a = [np.full(s, i, np.float32) for i, s in enumerate(SHAPES)] + [np.ones(3, np.float64)]
    b = [np.full(s, 2, np.float32) for s in SHAPES] + [np.full(3, 5, np.float64)]
    sums, products = stacked_map(lambda x, y: (x + y, x * y), a, b)
    for i, (s, p) in enumerate(zip(sums, products)):
        assert s.shape == a[i].shape and s.dtype == a[i].dtype
        np.testing.assert_array_equal(s.numpy(), a[i] + b[i])
        np.testing.assert_array_equal(p.numpy(), a[i] * b[i])


def test_the_function_runs_once_per_group_of_same_shaped_items():
    calls = []

    def double(x):
        calls.append(tuple(x.shape))
        return (2 * x,)

    (doubled,) = stacked_map(double, _items("float32"))
    # One call per distinct shape: 3 kernels stacked, 3 vectors stacked, the single (5, 2).
    assert sorted(calls) == [(3, 3, 3, 4, 8), (3, 8), (5, 2)]
    graph = tf.function(lambda: stacked_map(double, _items("float32"))).get_concrete_function().graph
    assert sum(op.type == "Mul" for op in graph.get_operations()) == 3  # not one per item (7)
    assert all(isinstance(t, tf.Tensor) for t in doubled)


def test_bad_columns_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        stacked_map(lambda x, y: (x,), [np.zeros(2)], [])
    with pytest.raises(ValueError, match="same static shape"):
        stacked_map(lambda x, y: (x,), [np.zeros(2)], [np.zeros(3)])
