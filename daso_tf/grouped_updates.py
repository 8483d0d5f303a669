"""Element-wise updates of many variables as a few stacked ops.

The EMA of the weights and the optimiser touch every variable each step. Written per
variable, that is a chain of ~5-10 small ops per variable (~1,700 graph nodes per DASO step
for WRN-28-1), each paying the executor's (CPU) or kernel launch's (GPU) fixed cost.
``stacked_map`` groups the variables by shape and dtype, stacks each group along a new
leading axis (``tf.stack``), applies the element-wise update ONCE per group and splits the
result again (``tf.unstack``): per variable only its reads and its assignment remain.

Stacking moves values without touching them and an element-wise function computes each
element from the same inputs with the same operations, so the results are bit-identical to
the per-variable chain.
"""

import collections

import tensorflow as tf


def stacked_map(fn, *columns):
    """Applies the element-wise ``fn`` to N items with one call per group of same-shaped items.

    Args:
        fn: ``fn(*tensors) -> tuple of tensors``, element-wise in every argument (scalars it
            closes over broadcast); called with stacked tensors ``[n, *shape]``.
        *columns: C sequences of N tensors (or variables); item i is
            ``(columns[0][i], ..., columns[C-1][i])`` and all its tensors have one shape.

    Returns:
        R lists of N tensors: ``fn``'s R results per item, in item order.
    """
    columns = [[tf.convert_to_tensor(value) for value in column] for column in columns]
    count = len(columns[0])
    if any(len(column) != count for column in columns):
        raise ValueError(f"stacked_map: columns of different lengths {[len(c) for c in columns]}.")
    groups = collections.defaultdict(list)
    for index in range(count):
        item = [column[index] for column in columns]
        shape = tuple(item[0].shape)
        if any(tuple(t.shape) != shape for t in item) or None in shape:
            raise ValueError(f"stacked_map: item {index} has shapes {[t.shape for t in item]}; "
                             "every tensor of an item needs the same static shape.")
        groups[(shape, tuple(t.dtype for t in item))].append(index)
    results = None
    for indices in groups.values():
        if len(indices) == 1:
            outputs = [[value] for value in fn(*(column[indices[0]] for column in columns))]
        else:
            stacked = fn(*(tf.stack([column[i] for i in indices]) for column in columns))
            outputs = [tf.unstack(value, num=len(indices)) for value in stacked]
        if results is None:
            results = [[None] * count for _ in outputs]
        for result, values in zip(results, outputs):
            for index, value in zip(indices, values):
                result[index] = value
    return results or []
