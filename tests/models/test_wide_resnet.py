"""WideResNet: structure, parameter count, padding and initialisation of the reference WRN."""

import keras
import numpy as np
import pytest

from daso_tf.models import WideResNet


def reference_param_count(depth, width, bn_params=2):
    """Trainable parameters of the reference WRN (lib/models/wrn.py), counted by hand."""
    n = (depth - 4) // 6
    filters = [16, 16 * width, 32 * width, 64 * width]
    total = 3 * 3 * 3 * 16  # init conv
    for stage in range(3):
        c_in, c_out = filters[stage], filters[stage + 1]
        for block in range(n):
            block_in = c_in if block == 0 else c_out
            total += bn_params * block_in  # pre-activation BN (pre_act or layer.0)
            total += 9 * block_in * c_out + bn_params * c_out + 9 * c_out * c_out
            if block == 0 and (stage > 0 or block_in != c_out):
                total += block_in * c_out  # 1x1 identity projection
    return total + bn_params * filters[3]  # final BN


@pytest.mark.parametrize("depth,width", [(28, 2), (10, 1), (16, 3)])
def test_parameter_count_matches_reference(depth, width):
    model = WideResNet(depth, width)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == reference_param_count(depth, width)
    assert model.feature_dim == 64 * width
    assert model.output.shape[-1] == 64 * width


def test_wrn_28_2_size_is_the_papers():
    # The paper's WRN-28-2 has 1.47 M parameters (BN moving stats not counted).
    assert reference_param_count(28, 2) == pytest.approx(1.47e6, rel=0.01)


def test_strided_conv_pads_both_sides_like_pytorch():
    # A 3x3 conv with stride 2 and 1-pixel padding on each side (PyTorch) samples input
    # rows/cols -1..1, 1..3, ... ; Keras "same" would sample 0..2, 2..4. The first output of
    # a sum kernel on an all-ones image therefore sees 4 ones (corner), not 9.
    model = WideResNet(10, 1, input_shape=(8, 8, 16))
    conv = model.get_layer("unit2_0_conv1")
    pad = model.get_layer("unit2_0_conv1_pad")
    x = np.ones((1, 8, 8, 16), np.float32)
    conv.kernel.assign(np.ones(conv.kernel.shape, np.float32))
    out = conv(pad(x)).numpy()
    assert out.shape == (1, 4, 4, 32)
    np.testing.assert_allclose(out[0, 0, 0, 0], 4 * 16)
    np.testing.assert_allclose(out[0, 1, 1, 0], 9 * 16)


def test_initialisers_follow_the_reference():
    model = WideResNet(28, 2)
    kernel = model.get_layer("unit3_1_conv1").kernel.numpy()  # 3x3x128x128
    fan_out = 3 * 3 * 128
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_out), rel=0.05)
    assert abs(kernel.mean()) < 0.05 * kernel.std()
    bn = model.get_layer("unit3_1_bn1")
    assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bn.beta.numpy(), 0.0)


def test_config_round_trip_and_bad_depth():
    model = WideResNet(16, 2, synchronized_batch_norm=True)
    clone = WideResNet.from_config(model.get_config())
    assert (clone.depth, clone.width, clone.synchronized_batch_norm) == (16, 2, True)
    assert len(clone.weights) == len(model.weights)
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(27, 2)


def test_batch_norm_moving_variance_is_unbiased_like_pytorch():
    from daso_tf.models.wide_resnet import ReferenceBatchNormalization

    layer = ReferenceBatchNormalization(momentum=0.9, epsilon=1e-5)
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 3, 2)).astype(np.float32)
    out = layer(x, training=True).numpy()
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    # ...while normalisation uses the biased variance.
    np.testing.assert_allclose(out.reshape(-1, 2), (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5),
                               rtol=1e-4, atol=1e-5)


def test_leaky_relu_slope_is_exact_in_float64():
    from daso_tf.models.wide_resnet import ReferenceLeakyReLU

    layer = ReferenceLeakyReLU(negative_slope=0.1, dtype="float64")
    x = np.array([-3.0, -1e-3, 0.0, 2.5])
    np.testing.assert_array_equal(layer(x).numpy(), np.where(x > 0, x, x * 0.1))


def test_stride_1_convolutions_pad_every_side_like_pytorch():
    # "same" for stride 1: a 3x3 sum kernel on ones sees 4 ones in a corner, 6 on an edge.
    model = WideResNet(10, 1, input_shape=(6, 6, 16))
    conv = model.get_layer("unit1_0_conv1")
    x = np.ones((1, 6, 6, 16), np.float32)
    conv.kernel.assign(np.ones(conv.kernel.shape, np.float32))
    out = conv(model.get_layer("unit1_0_conv1_pad")(x)).numpy()
    assert out.shape == (1, 6, 6, 16)
    np.testing.assert_allclose(out[0, 0, 0, 0], 4 * 16)
    np.testing.assert_allclose(out[0, 0, 2, 0], 6 * 16)
    np.testing.assert_allclose(out[0, 2, 2, 0], 9 * 16)


def test_layer_list_is_stable_for_checkpoints():
    # Checkpoints address the backbone's layers by position: every 3x3 conv keeps its
    # "<name>_pad" layer in front (an Identity for stride 1, where the conv pads itself).
    names = [layer.name for layer in WideResNet(10, 1).layers]
    assert names[:8] == ["images", "init_conv_pad", "init_conv", "unit1_0_pre_act_bn", "unit1_0_pre_act_relu",
                         "unit1_0_conv1_pad", "unit1_0_conv1", "unit1_0_bn2"]
    assert len(names) == 35
    pads = {name: type(WideResNet(10, 1).get_layer(name)).__name__ for name in names if name.endswith("_pad")}
    assert pads["unit2_0_conv1_pad"] == "ZeroPadding2D" and pads["unit1_0_conv2_pad"] == "Identity"


def _batch_norm_step(dtype, x, upstream, policy=None):
    """Output, input/gamma/beta gradients and new moving statistics of one training step."""
    import tensorflow as tf

    from daso_tf.models.wide_resnet import ReferenceBatchNormalization

    layer = ReferenceBatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy or dtype)
    layer.build(x.shape)
    layer.gamma.assign(np.linspace(0.5, 1.5, x.shape[-1]))
    layer.beta.assign(np.linspace(-1, 1, x.shape[-1]))
    layer.moving_variance.assign(np.full(x.shape[-1], 2.0))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, upstream.dtype) * upstream)
        return y, tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])

    y, grads = step(tf.cast(x, dtype))
    ops = [op.type for op in step.get_concrete_function(tf.cast(x, dtype)).graph.get_operations()]
    values = [y, *grads, layer.moving_mean.value, layer.moving_variance.value]
    return [np.asarray(tf.cast(v, "float64")) for v in values], ops


@pytest.mark.parametrize("dtype, policy, rtol", [("float32", None, 1e-5), ("bfloat16", "mixed_bfloat16", 2e-2)])
def test_fused_training_batch_norm_matches_the_op_by_op_float64_path(dtype, policy, rtol):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (6, 5, 5, 8))
    upstream = rng.normal(size=x.shape)
    expected, ops64 = _batch_norm_step("float64", x, upstream)
    got, ops = _batch_norm_step(dtype, x, upstream.astype("float32"), policy)
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= set(ops)
    assert "FusedBatchNormV3" not in ops64  # float64 stays op by op
    for name, a, b in zip(("y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"), got, expected):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)
    flat = x.reshape(-1, 8)
    np.testing.assert_allclose(got[5], 0.9 * 2.0 + 0.1 * flat.var(0, ddof=1), rtol=rtol)  # unbiased, as torch


@pytest.mark.parametrize("shape, mean, std", [
    ((20, 16, 16, 16), 0.5, 2.0),    # a WRN-28-1 stage-1 activation at B=4, mu=2
    ((8, 4, 4, 32), 30.0, 0.1),      # few values per channel, far from zero: cancellation-prone
    ((24, 8, 8, 16), 1.0, 1e-3),     # nearly constant channels: tiny variance
])
def test_fused_training_batch_norm_is_as_accurate_as_the_op_by_op_float32_path(shape, mean, std, monkeypatch):
    # The fused kernel sums in another order than the op-by-op chain, so the two float32 paths
    # differ in the last bits; measured against float64, the fused one must not be the worse.
    from daso_tf.models.wide_resnet import ReferenceBatchNormalization

    rng = np.random.default_rng(3)
    x = rng.normal(mean, std, shape)
    upstream = rng.normal(size=shape)
    expected, _ = _batch_norm_step("float64", x, upstream)
    fused, fused_ops = _batch_norm_step("float32", x, upstream.astype("float32"))
    monkeypatch.setattr(ReferenceBatchNormalization, "_fusable", lambda self, inputs: False)
    chain, chain_ops = _batch_norm_step("float32", x, upstream.astype("float32"))
    assert "FusedBatchNormGradV3" in fused_ops and "FusedBatchNormV3" not in chain_ops
    for name, f, c, e in zip(("y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"), fused, chain, expected):
        scale = np.abs(e).max()
        fused_error, chain_error = np.abs(f - e).max() / scale, np.abs(c - e).max() / scale
        # Both at float32 round-off (measured: within 3x of each other on these inputs).
        assert fused_error <= max(4 * chain_error, 1e-6), (name, fused_error, chain_error)
        assert fused_error < 1e-3, (name, fused_error)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference_batch_norm_uses_the_moving_statistics(dtype):
    import tensorflow as tf

    from daso_tf.models.wide_resnet import ReferenceBatchNormalization

    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (3, 4, 4, 5)).astype(dtype)
    layer = ReferenceBatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype)
    layer.build(x.shape)
    gamma, beta, mean, variance = (rng.normal(size=5), rng.normal(size=5), rng.normal(size=5), rng.uniform(0.5, 2, 5))
    for variable, value in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance),
                               (gamma, beta, mean, variance)):
        variable.assign(value)
    call = tf.function(lambda x: layer(x, training=False))
    expected = (x.astype(np.float64) - mean) / np.sqrt(variance + 1e-5) * gamma + beta
    np.testing.assert_allclose(call(x).numpy(), expected, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5)
    fused = "FusedBatchNormV3" in [op.type for op in call.get_concrete_function(x).graph.get_operations()]
    assert fused == (dtype == "float32")  # one kernel; float64 stays op by op
    np.testing.assert_array_equal(layer.moving_mean.numpy(), mean.astype(dtype))  # inference updates nothing


def test_batch_norm_momentum_reaches_every_batch_norm_and_round_trips():
    model = WideResNet(10, 1, batch_norm_momentum=0.999)  # ACR's WRN (PyTorch momentum 0.001)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 7 and {layer.momentum for layer in norms} == {0.999}
    assert WideResNet.from_config(model.get_config()).get_config()["batch_norm_momentum"] == 0.999
    assert {layer.momentum for layer in WideResNet(10, 1).layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    with pytest.raises(ValueError, match="batch_norm_momentum"):
        WideResNet(10, 1, batch_norm_momentum=1.0)
