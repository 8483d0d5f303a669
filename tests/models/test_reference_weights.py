import sys

import keras
import numpy as np
import pytest

from daso_tf.models import WideResNet
from daso_tf.models.reference_weights import (
    assign_reference_state_dict,
    convert_reference_state_dict,
    export_reference_state_dict,
    load_reference_checkpoint,
    load_reference_weights,
)


def _classifier(feature_dim, num_classes):
    classifier = keras.layers.Dense(num_classes, name="classifier")
    classifier.build((None, feature_dim))
    return classifier


def _random_reference_state_dict(depth, width, num_classes, seed=0):
    """A state dict in the reference's names and PyTorch layout, written out by hand."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, out_c, in_c, k):
        state[name] = rng.normal(size=(out_c, in_c, k, k)).astype(np.float32)

    def bn(prefix, c):
        state[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, size=c).astype(np.float32)
        state[f"{prefix}.bias"] = rng.normal(size=c).astype(np.float32)
        state[f"{prefix}.running_mean"] = rng.normal(size=c).astype(np.float32)
        state[f"{prefix}.running_var"] = rng.uniform(0.5, 2.0, size=c).astype(np.float32)
        state[f"{prefix}.num_batches_tracked"] = np.asarray(7, np.int64)

    n = (depth - 4) // 6
    filters = [16, 16 * width, 32 * width, 64 * width]
    conv("encoder.init_conv.weight", 16, 3, 3)
    for stage in (1, 2, 3):
        for block in range(n):
            p = f"encoder.unit{stage}.{block}"
            c_in = filters[stage - 1] if block == 0 else filters[stage]
            c_out = filters[stage]
            if stage == 1 and block == 0:
                bn(f"{p}.pre_act.0", c_in)
                conv(f"{p}.layer.0.weight", c_out, c_in, 3)
                bn(f"{p}.layer.1", c_out)
                conv(f"{p}.layer.3.weight", c_out, c_out, 3)
            else:
                bn(f"{p}.layer.0", c_in)
                conv(f"{p}.layer.2.weight", c_out, c_in, 3)
                bn(f"{p}.layer.3", c_out)
                conv(f"{p}.layer.5.weight", c_out, c_out, 3)
            if block == 0 and (stage > 1 or c_in != c_out):
                conv(f"{p}.identity.weight", c_out, c_in, 1)
    bn("encoder.unit4.0", filters[3])
    state["classifier.classifier.weight"] = rng.normal(size=(num_classes, filters[3])).astype(np.float32)
    state["classifier.classifier.bias"] = rng.normal(size=num_classes).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def wrn10():
    backbone = WideResNet(depth=10, width=1, input_shape=(8, 8, 3))
    return backbone, _classifier(64, 5)


def test_golden_trajectory_weights_round_trip(golden_dir):
    path = sorted(golden_dir.glob("*_trajectory_*.npz"))[0]
    with np.load(path) as data:
        depth, width, num_classes = int(data["depth"]), int(data["width"]), int(data["num_classes"])
        state = {key[2:]: data[key] for key in data.files if key.startswith("w/")}
    backbone = WideResNet(depth=depth, width=width, input_shape=(32, 32, 3))
    classifier = _classifier(backbone.feature_dim, num_classes)
    count = assign_reference_state_dict(state, backbone, classifier)
    # Every weight of both Keras models is covered, and every reference key except the BN counters.
    assert count == len(backbone.weights) + len(classifier.weights)
    assert count == len([k for k in state if not k.endswith("num_batches_tracked")])

    exported = export_reference_state_dict(backbone, classifier)
    assert set(exported) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_layouts_map_element_by_element(wrn10):
    backbone, classifier = wrn10
    state = _random_reference_state_dict(10, 1, 5)
    assign_reference_state_dict(state, backbone, classifier)
    w = state["encoder.init_conv.weight"]  # [O, I, H, W]
    kernel = keras.ops.convert_to_numpy(backbone.get_layer("init_conv").kernel)  # [H, W, I, O]
    for o, i, h, x in [(0, 0, 0, 0), (5, 2, 0, 2), (15, 1, 2, 1)]:
        assert kernel[h, x, i, o] == w[o, i, h, x]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(classifier.kernel), state["classifier.classifier.weight"].T
    )
    bn = backbone.get_layer("unit2_0_bn2")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), state["encoder.unit2.0.layer.3.weight"])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_variance), state["encoder.unit2.0.layer.3.running_var"]
    )
    pre = backbone.get_layer("unit1_0_pre_act_bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pre.beta), state["encoder.unit1.0.pre_act.0.bias"])
    final = backbone.get_layer("final_bn")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(final.moving_mean), state["encoder.unit4.0.running_mean"]
    )


def test_converted_convolutions_compute_pytorch_cross_correlation(wrn10):
    backbone, classifier = wrn10
    state = _random_reference_state_dict(10, 1, 5, seed=1)
    assign_reference_state_dict(state, backbone, classifier)
    rng = np.random.default_rng(2)

    # 1x1 strided projection: out[n, y, x, o] = sum_i in[n, 2y, 2x, i] * W[o, i, 0, 0].
    inputs = rng.normal(size=(2, 6, 6, 16)).astype(np.float32)
    w = state["encoder.unit2.0.identity.weight"]
    expected = np.einsum("nyxi,oi->nyxo", inputs[:, ::2, ::2, :], w[:, :, 0, 0])
    got = keras.ops.convert_to_numpy(backbone.get_layer("unit2_0_identity")(inputs))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    # 3x3, padding 1 (PyTorch's Conv2d(3, 16, 3, 1, 1)): a cross-correlation, not flipped.
    images = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    w = state["encoder.init_conv.weight"]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 5, 5, 16), np.float32)
    for dy in range(3):
        for dx in range(3):
            expected += np.einsum("nyxi,oi->nyxo", padded[:, dy : dy + 5, dx : dx + 5, :], w[:, :, dy, dx])
    x = backbone.get_layer("init_conv_pad")(images)
    got = keras.ops.convert_to_numpy(backbone.get_layer("init_conv")(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_ema_wrapper_prefix_and_extra_heads(wrn10):
    backbone, classifier = wrn10
    state = _random_reference_state_dict(10, 1, 5, seed=3)
    wrapped = {f"ema_model.{key}": value for key, value in state.items()}
    assign_reference_state_dict(wrapped, backbone, classifier)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(classifier.bias), state["classifier.classifier.bias"])

    with_abc = dict(state, **{"abc_classifier.classifier.weight": np.zeros((5, 64), np.float32)})
    with pytest.raises(ValueError, match="abc_classifier.classifier.weight"):
        convert_reference_state_dict(with_abc, backbone, classifier)
    assert len(convert_reference_state_dict(with_abc, backbone, classifier, strict=False)) == len(
        backbone.weights
    ) + 2
    # Without a classifier layer the encoder alone is converted and the head's keys are skipped.
    assert len(convert_reference_state_dict(state, backbone)) == len(backbone.weights)


def test_bad_state_dicts_name_the_key(wrn10):
    backbone, classifier = wrn10
    state = _random_reference_state_dict(10, 1, 5, seed=4)

    missing = {k: v for k, v in state.items() if k != "encoder.unit3.0.layer.5.weight"}
    with pytest.raises(ValueError, match=r"Missing key.*encoder\.unit3\.0\.layer\.5\.weight"):
        convert_reference_state_dict(missing, backbone, classifier)

    misshaped = dict(state)
    misshaped["encoder.unit2.0.identity.weight"] = np.zeros((32, 16, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"encoder\.unit2\.0\.identity\.weight.*\(32, 16, 3, 3\).*\(32, 16, 1, 1\)"):
        convert_reference_state_dict(misshaped, backbone, classifier)

    # A WRN-28 state dict does not fit a WRN-10: the extra blocks are unknown keys.
    deeper = _random_reference_state_dict(16, 1, 5)
    with pytest.raises(ValueError, match=r"Unknown key.*encoder\.unit1\.1\.layer\.0\.weight"):
        convert_reference_state_dict(deeper, backbone, classifier)

    wrong_classes = dict(state)
    wrong_classes["classifier.classifier.weight"] = np.zeros((7, 64), np.float32)
    with pytest.raises(ValueError, match=r"classifier\.classifier\.weight.*\(7, 64\)"):
        convert_reference_state_dict(wrong_classes, backbone, classifier)

    integer = dict(state)
    integer["encoder.unit4.0.running_mean"] = np.zeros(64, np.int64)
    with pytest.raises(ValueError, match=r"encoder\.unit4\.0\.running_mean.*dtype"):
        convert_reference_state_dict(integer, backbone, classifier)

    not_a_wrn = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="mlp")
    with pytest.raises(ValueError, match="init_conv"):
        convert_reference_state_dict(state, not_a_wrn)


def test_named_extra_heads_read_their_reference_keys(wrn10):
    backbone, classifier = wrn10
    state = _random_reference_state_dict(10, 1, 5, seed=8)
    state["abc_classifier.classifier.weight"] = np.arange(5 * 64, dtype=np.float32).reshape(5, 64)
    state["abc_classifier.classifier.bias"] = np.arange(5, dtype=np.float32)
    abc = _classifier(64, 5)
    assign_reference_state_dict(state, backbone, classifier, heads={"abc_classifier": abc})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(abc.kernel), state["abc_classifier.classifier.weight"].T)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(abc.bias), np.arange(5))
    del state["abc_classifier.classifier.bias"]
    with pytest.raises(ValueError, match=r"Missing key.*abc_classifier\.classifier\.bias"):
        convert_reference_state_dict(state, backbone, classifier, heads={"abc_classifier": abc})


def test_load_into_daso_model_online_and_ema():
    import daso_tf

    model = daso_tf.DASO(
        WideResNet(depth=10, width=1, input_shape=(8, 8, 3)), 5,
        normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), queue_size=4, histogram_period=2,
    )
    state = _random_reference_state_dict(10, 1, 5, seed=9)
    with pytest.raises(ValueError, match="must be built"):
        load_reference_weights(model, state)
    model.build((None, 8, 8, 3))
    with pytest.raises(ValueError, match=r"network must be 'online', 'ema' or 'both'; got 'teacher'"):
        load_reference_weights(model, state, network="teacher")

    def kernel(network):
        return keras.ops.convert_to_numpy(network.classifier.kernel)

    load_reference_weights(model, state, network="online")
    np.testing.assert_array_equal(kernel(model.online_network), state["classifier.classifier.weight"].T)
    assert not np.array_equal(kernel(model.ema_network), state["classifier.classifier.weight"].T)

    ema_state = {f"ema_model.{k}": v * 2 if v.dtype == np.float32 else v for k, v in state.items()}
    load_reference_weights(model, ema_state, network="ema")
    np.testing.assert_array_equal(kernel(model.ema_network), 2 * state["classifier.classifier.weight"].T)

    load_reference_weights(model, state)  # both: the reference's EMA starts as a copy
    images = np.random.default_rng(10).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.online_network(images, training=False)),
        keras.ops.convert_to_numpy(model.ema_network(images, training=False)),
    )


def test_checkpoint_loading_without_torch_says_what_is_needed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"checkpoint\.pth\.tar.*needs PyTorch"):
        load_reference_checkpoint(tmp_path / "checkpoint.pth.tar")


class _TorchReferenceWRN:
    """Builds, with torch.nn, a module tree whose state-dict names and computation follow the
    reference WRN's description (see daso_tf/models/reference_weights.py)."""

    @staticmethod
    def build(torch, depth, width, num_classes):
        nn = torch.nn

        class Block(nn.Module):
            def __init__(self, c_in, c_out, stride, pre_activate):
                super().__init__()
                act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
                conv = lambda i, o, s: nn.Conv2d(i, o, 3, s, 1, bias=False)  # noqa: E731
                if pre_activate:
                    self.pre_act = nn.Sequential(nn.BatchNorm2d(c_in), act())
                    layers = []
                else:
                    self.pre_act = nn.Identity()
                    layers = [nn.BatchNorm2d(c_in), act()]
                layers += [conv(c_in, c_out, stride), nn.BatchNorm2d(c_out), act(), conv(c_out, c_out, 1)]
                self.layer = nn.Sequential(*layers)
                needs_projection = stride > 1 or c_in != c_out
                self.identity = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if needs_projection else nn.Identity()

            def forward(self, x):
                x = self.pre_act(x)
                return self.identity(x) + self.layer(x)

        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                n = (depth - 4) // 6
                f = [16, 16 * width, 32 * width, 64 * width]
                self.init_conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
                for s in (1, 2, 3):
                    blocks = [Block(f[s - 1], f[s], 1 if s == 1 else 2, s == 1)]
                    blocks += [Block(f[s], f[s], 1, False) for _ in range(n - 1)]
                    setattr(self, f"unit{s}", nn.Sequential(*blocks))
                self.unit4 = nn.Sequential(nn.BatchNorm2d(f[3]), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1))

            def forward(self, x):
                x = self.unit3(self.unit2(self.unit1(self.init_conv(x))))
                return self.unit4(x).flatten(1)

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.classifier = nn.Linear(64 * width, num_classes)

            def forward(self, x):
                return self.classifier(x)

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = Encoder()
                self.classifier = Head()

            def forward(self, x):
                return self.classifier(self.encoder(x))

        return Model()


def test_torch_forward_and_checkpoint_match(tmp_path):
    torch = pytest.importorskip("torch")
    depth, width, num_classes = 10, 1, 5
    state = _random_reference_state_dict(depth, width, num_classes, seed=5)
    reference = _TorchReferenceWRN.build(torch, depth, width, num_classes)
    # The hand-written state dict has exactly the reference module tree's names and shapes.
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    reference.eval()

    ema_state = {
        f"ema_model.{k}": v * 0.5 if v.dtype == torch.float32 else v for k, v in reference.state_dict().items()
    }
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(
        {"model": reference.state_dict(), "ema_model": ema_state, "optimizer": {}, "scheduler": {},
         "meta": {"iter": 3}},
        str(path),
    )
    loaded = load_reference_checkpoint(path)
    assert set(loaded["model"]) == set(state) == set(loaded["ema_model"])
    np.testing.assert_array_equal(
        loaded["ema_model"]["encoder.init_conv.weight"], state["encoder.init_conv.weight"] * 0.5
    )

    backbone = WideResNet(depth=depth, width=width, input_shape=(16, 16, 3))
    classifier = _classifier(backbone.feature_dim, num_classes)
    assign_reference_state_dict(loaded["model"], backbone, classifier)
    images = np.random.default_rng(6).normal(size=(4, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    got = keras.ops.convert_to_numpy(classifier(backbone(images, training=False)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
