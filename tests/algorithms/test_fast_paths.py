"""Fast paths compute what the plain path computes.

- XLA (``compile(jit_compile=True)``), alone and with ``steps_per_execution``: the whole
  DASO step (queue, histogram, EMA, step counter, optimiser slots) matches the plain graph
  step to 1e-4 (float32 reassociation only);
- mixed precision (bfloat16 / float16 + LossScaleOptimizer): queue, prototypes, EMA,
  histogram and losses stay float32 and follow the float32 run to a half-precision
  tolerance (bfloat16 keeps 8 mantissa bits: losses within 5e-2 relative);
- ``augment_on_device``: the train step turns raw uint8 batches into exactly the images
  ``train_stream`` makes on the host for the same (seed, step), in graph mode and under
  XLA (bit-identical), so XLA training on the raw stream matches plain training on the
  host-augmented stream to the XLA tolerance (1e-4); so do PseudoLabel's one view and
  USADTM's (identity, weak, strong) views with its per-class banks.

Tiny setting: WRN-10-1 on 16x16 images, B=4, mu=1, warm-up 1 step so DASO's blending and
alignment run from step 1, confidence threshold 0.37 (3 classes): a real threshold, under
which the float32 run masks [1, 1, 0.5] of the unlabeled batch in steps 1-3, so the fast
paths must reproduce which samples pass, not just that all do. (Its confidences stay clear
of 0.37 by more than half-precision error: 0.36 and 0.38 give the same masks.)
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from daso_tf.algorithms import get_algorithm
from daso_tf.data import LongTailedData, pipeline, train_stream
from daso_tf.models import WideResNet
from daso_tf.models.wide_resnet import ReferenceBatchNormalization

SIZE, BATCH, RATIO, CLASSES, SEED = 16, 4, 1, 3, 5
THRESHOLD = 0.37
NORMALIZATION = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture
def dtype_policy():
    """Sets the global Keras dtype policy for one test, restoring float32 afterwards."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="module")
def lt_data():
    rng = np.random.default_rng(0)
    labeled = rng.integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (24, SIZE, SIZE, 3), dtype=np.uint8)
    labeled_labels = np.arange(12, dtype=np.int64) % CLASSES
    empty = np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return LongTailedData(labeled, labeled_labels, unlabeled, np.arange(24) % CLASSES, empty,
                          np.zeros([0], np.int64), empty, np.zeros([0], np.int64),
                          [str(k) for k in range(CLASSES)], [4] * CLASSES, [8] * CLASSES, [0] * CLASSES)


def make_model(algorithm="daso", jit_compile=False, steps_per_execution=1, **kwargs):
    keras.utils.set_random_seed(1)  # identical initial weights in every model
    options = dict(threshold=THRESHOLD) if algorithm in ("fixmatch", "daso") else {}
    if algorithm == "daso":
        options.update(warmup_steps=1, queue_size=4, histogram_period=2)
    options.update(kwargs)
    model = get_algorithm(algorithm)(WideResNet(10, 1, input_shape=(SIZE, SIZE, 3)), CLASSES,
                                     normalization=NORMALIZATION, **options)
    model.build((None, SIZE, SIZE, 3))
    model.compile(jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    model.optimizer.build(model.trainable_variables)
    return model


def stream(lt_data, **kwargs):
    return train_stream(lt_data, labeled_batch_size=BATCH, unlabeled_ratio=RATIO, seed=SEED,
                        output_size=SIZE, **kwargs)


def train(model, dataset, steps):
    """Runs Keras' train function (what fit runs) for ``steps`` steps; per-call logs."""
    model.make_train_function()
    iterator = iter(dataset)
    calls = steps // model.steps_per_execution
    return [{k: float(v) for k, v in model.train_function(iterator).items()} for _ in range(calls)]


def state(model):
    """Every variable of the model and its optimiser, keyed by its position and its path
    without the model's own (auto-numbered) name (online and EMA paths may coincide)."""
    def key(index, variable):
        path = variable.path.replace(model.name, "model").replace(model.optimizer.name, "optimizer")
        return f"{index}:{path}"

    variables = model.weights + model.optimizer.variables
    return {key(i, v): np.asarray(v.numpy(), dtype=np.float64) for i, v in enumerate(variables)}


def assert_same_state(actual, expected, rtol, atol):
    assert actual.keys() == expected.keys()
    for path in expected:
        np.testing.assert_allclose(actual[path], expected[path], rtol=rtol, atol=atol, err_msg=path)


# ------------------------------------------------------------------------------- XLA


@pytest.fixture(scope="module")
def plain_daso_run(lt_data):
    model = make_model()
    logs = train(model, stream(lt_data), 3)
    return logs, state(model)


def test_xla_step_with_steps_per_execution_matches_plain_step(lt_data, plain_daso_run):
    plain_logs, plain_state = plain_daso_run
    model = make_model(jit_compile=True, steps_per_execution=3)
    assert model.jit_compile is True
    (logs,) = train(model, stream(lt_data), 3)  # one call, three XLA steps, one host read
    for key in ("loss", "loss_x", "loss_u", "loss_align", "mask"):
        np.testing.assert_allclose(logs[key], plain_logs[-1][key], rtol=1e-4, atol=1e-5, err_msg=key)
    # DASO was active at steps 1 and 2 (warm-up 1): the alignment loss is not a constant 0;
    # half of step 3's unlabeled batch passed the threshold, in both runs. (The logs are the
    # means since the last reset, model.step_log_means: per step 1, 1, 0.5.)
    assert logs["loss_align"] > 0 and logs["loss_u"] > 0
    assert [step["mask"] for step in plain_logs] == pytest.approx([1.0, 1.0, 2.5 / 3])
    assert logs["mask"] == pytest.approx(2.5 / 3)
    # Weights, EMA, BN statistics, queue, prototypes, histogram, step, momentum buffers.
    assert_same_state(state(model), plain_state, rtol=1e-4, atol=1e-5)
    assert int(model.step.numpy()) == 3


# ------------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("policy, loss_rtol", [("mixed_bfloat16", 5e-2), ("mixed_float16", 1e-2)])
def test_mixed_precision_keeps_state_float32_and_follows_float32(lt_data, plain_daso_run, dtype_policy,
                                                                 policy, loss_rtol):
    plain_logs, plain_state = plain_daso_run
    dtype_policy(policy)
    model = make_model()
    assert model.online_network.backbone.compute_dtype == policy.split("_")[1]
    if policy == "mixed_float16":  # Keras' auto_scale_loss wraps the reference SGD
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    logs = train(model, stream(lt_data), 3)
    for step_logs, step_plain in zip(logs, plain_logs):
        for key in ("loss", "loss_x", "loss_u", "loss_align"):
            np.testing.assert_allclose(step_logs[key], step_plain[key], rtol=loss_rtol, err_msg=key)
    for variable in (model.queue.queue_features, model.queue.prototype_vectors, *model.ema_network.weights,
                     *model.online_network.trainable_weights):
        assert variable.dtype == "float32", variable.path
    assert model.queue.prototypes.dtype == "float32"
    # The same unlabeled samples passed the threshold at every step.
    assert [step["mask"] for step in logs] == [step["mask"] for step in plain_logs]
    mixed_state = state(model)
    # Queue and prototypes hold EMA features of the same labeled images. bfloat16 keeps 8
    # significant bits (float16: 11); after 3 steps of WRN-10-1 the features differ from
    # float32 by 1.1% (float16: 0.3%) of their largest magnitude (measured). Tolerance: 3%
    # (1%) of it, ~3x the measured error.
    feature_rtol = {"mixed_bfloat16": 3e-2, "mixed_float16": 1e-2}[policy]
    for name in ("queue_features", "prototype_vectors"):
        (path,) = [p for p in plain_state if p.endswith(name)]
        scale = np.abs(plain_state[path]).max()
        np.testing.assert_allclose(mixed_state[path], plain_state[path], atol=feature_rtol * scale, err_msg=path)
    # The histogram holds the same pseudo-labels: the same per-class counts in the closed
    # window (the distribution DASO uses) and the open one, after the same updates.
    for name in ("window_counts", "closed_counts", "num_updates"):
        (path,) = [p for p in plain_state if p.endswith(f"histogram/{name}")]
        np.testing.assert_array_equal(mixed_state[path], plain_state[path], err_msg=path)
    (closed,) = [p for p in plain_state if p.endswith("histogram/closed_counts")]
    assert plain_state[closed].sum() == 2 * BATCH * RATIO and len(set(plain_state[closed])) > 1
    online_kernels = [p for p in plain_state if p.endswith("classifier/kernel")][:1]
    for path in online_kernels:
        np.testing.assert_allclose(mixed_state[path], plain_state[path], atol=2e-2, err_msg=path)


# ------------------------------------------------------------------------------- augmentation on device


def raw_stream(lt_data, **kwargs):
    return stream(lt_data, augment_on_device=True, **kwargs)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_device_augmentation_reproduces_the_host_stream(lt_data, jit_compile):
    model = make_model(jit_compile=jit_compile, augment_on_device=True, augment_seed=SEED)
    augment = tf.function(model.augment_raw_batch, jit_compile=jit_compile)
    start = 3  # a resumed stream: batch k is a pure function of (seed, k)
    host = iter(stream(lt_data, start_step=start, with_unlabeled_labels=True))
    raw = iter(raw_stream(lt_data, start_step=start, with_unlabeled_labels=True))
    for step in (start, start + 1):
        (x_l, y_l), (u_w, u_s, u_true) = next(host)
        (raw_x, raw_y), (raw_u, raw_true) = next(raw)
        assert raw_u.dtype == tf.uint8 and raw_u.shape == u_w.shape
        (dev_x, dev_y), (dev_w, dev_s, dev_true) = augment(((raw_x, raw_y), (raw_u, raw_true)),
                                                           tf.constant(step, tf.int64))
        for device_view, host_view in ((dev_x, x_l), (dev_w, u_w), (dev_s, u_s), (dev_y, y_l),
                                       (dev_true, u_true)):
            np.testing.assert_array_equal(device_view.numpy(), host_view.numpy())
        assert not np.array_equal(dev_w.numpy(), raw_u.numpy())  # it did augment


def test_xla_training_on_raw_batches_equals_plain_training_on_host_batches(lt_data, plain_daso_run):
    # Augmentation inside the compiled step, three XLA steps per call: the host only batches uint8.
    plain_logs, plain_state = plain_daso_run
    model = make_model(augment_on_device=True, augment_seed=SEED, jit_compile=True, steps_per_execution=3)
    (logs,) = train(model, raw_stream(lt_data), 3)
    np.testing.assert_allclose(logs["loss"], plain_logs[-1]["loss"], rtol=1e-4)
    assert_same_state(state(model), plain_state, rtol=1e-4, atol=1e-5)


def test_augment_on_device_config_and_errors(lt_data):
    model = make_model(augment_on_device=True, augment_seed=SEED)
    config = model.get_config()
    assert (config["augment_on_device"], config["augment_seed"]) == (True, SEED)
    assert "augment_on_device" not in make_model().get_config()
    host_batch = next(iter(stream(lt_data)))  # ((x_l, y_l), (u_w, u_s)): already augmented
    with pytest.raises(ValueError, match="augment_on_device=True needs batches"):
        model.augment_raw_batch(host_batch, tf.constant(0, tf.int64))
    assert pipeline.augmentation_keys(SEED, 0, 2).shape == (3, 2)


def test_device_augmentation_makes_pseudo_labels_single_weak_view(lt_data):
    # A one-view learner (USADTM's three views: the XLA test below): the host stream's images.
    model = make_model("pseudo_label", augment_on_device=True, augment_seed=SEED)
    views = model.unlabeled_views
    (x_l, y_l), host_views = next(iter(stream(lt_data, unlabeled_views=views, with_unlabeled_labels=True)))
    raw = next(iter(raw_stream(lt_data, with_unlabeled_labels=True)))
    (dev_x, dev_y), dev_views = tf.function(model.augment_raw_batch)(raw, tf.constant(0, tf.int64))
    assert len(dev_views) == len(views) + 1  # + u_true
    for device_view, host_view in zip((dev_x, dev_y) + tuple(dev_views), (x_l, y_l) + tuple(host_views)):
        np.testing.assert_array_equal(device_view.numpy(), host_view.numpy())


@pytest.mark.slow
def test_usadtm_under_xla_on_raw_batches_equals_the_plain_host_run(lt_data, monkeypatch):
    # Per-class banks, IIC loss and prototype pseudo-labels inside one compiled step with
    # on-device (identity, weak, strong) views: the plain host-stream run to the XLA tolerance.
    # BatchNorm op by op in both runs: the plain run's fused CPU kernel sums in another order
    # than XLA's expansion, and that last-bit difference is enough to flip a near-tie among
    # USADTM's prototype pseudo-labels (momentum buffers ~1e-3 apart after two steps), which
    # would hide what this test checks.
    monkeypatch.setattr(ReferenceBatchNormalization, "_fusable", lambda self, inputs: False)
    options = dict(labeled_class_counts=[4] * CLASSES, warmup_steps=1)
    plain = make_model("usadtm", **options)
    plain_logs = train(plain, stream(lt_data, unlabeled_views=plain.unlabeled_views), 2)
    model = make_model("usadtm", jit_compile=True, steps_per_execution=2, augment_on_device=True,
                       augment_seed=SEED, **options)
    logs = train(model, raw_stream(lt_data), 2)  # one call, two XLA steps
    for key in ("loss", "loss_x", "loss_uc", "loss_u", "mask"):
        np.testing.assert_allclose(logs[-1][key], plain_logs[-1][key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert logs[-1]["loss_u"] > 0  # the pseudo-label loss ran (after the 1-step warm-up)
    assert_same_state(state(model), state(plain), rtol=1e-4, atol=1e-5)
