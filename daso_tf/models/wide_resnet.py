"""Wide ResNet (WRN-depth-width) exactly as the DASO reference builds it.

Reference semantics (ytaek-oh/daso ``lib/models/wrn.py``):
- LeakyReLU(0.1); BatchNorm with PyTorch's defaults (momentum 0.1 -> Keras 0.9,
  epsilon 1e-5);
- 3x3 convolutions padded by 1 pixel on every side: "same" for stride 1, an explicit
  1-pixel zero pad then "valid" for stride 2 (Keras' "same" pads strided convolutions
  asymmetrically where PyTorch pads both sides);
- the first block of the first stage activates before the residual split (both the
  shortcut and the residual branch see BN+LeakyReLU of the input); all others add the
  raw input (or its strided 1x1 projection) to the residual branch;
- kaiming-normal (fan_out) convolutions; BN gamma 1, beta 0;
- output: the globally average-pooled features of width 64 * width (no classifier; the
  algorithms own the linear head, see ``daso_tf.models.classifier_head``).

Layer names are stable: ``daso_tf.models.reference_weights`` maps the reference
state-dict names onto them.
"""

import keras
import numpy as np
from keras import ops

# PyTorch BatchNorm2d defaults expressed in Keras terms.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
LEAKY_SLOPE = 0.1


def conv_kernel_initializer():
    # torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2/fan_out), untruncated.
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def classifier_kernel_initializer():
    # torch.nn.init.xavier_normal_: N(0, 2/(fan_in+fan_out)), untruncated.
    return keras.initializers.VarianceScaling(scale=1.0, mode="fan_avg", distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package="daso_tf")
class ReferenceBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose moving variance follows PyTorch: it is updated with the
    UNBIASED batch variance (n / (n - 1)); normalisation uses the biased one, as both do.

    Training is unaffected (nothing reads the moving statistics in training mode), but
    inference-mode logits of a replayed reference run differ by ~1e-2 otherwise.

    On 4-D channels-last float32 / bfloat16 / float16 inputs the whole layer is ONE fused
    kernel (``FusedBatchNormV3``; backward ``FusedBatchNormGradV3``) instead of ~20
    element-wise ops forward and ~30 backward, in training and inference (where Grappler can
    fold it into the preceding convolution). Same math: it returns the unbiased batch
    variance and applies the same moving-average constants. Not bit-identical to the op-by-op
    chain (another summation order: oneDNN's kernel on a CPU, cuDNN's on a GPU, as the
    PyTorch reference runs there), but as accurate: against a float64 computation its float32
    outputs and gradients are off by the same order as the op-by-op float32 chain's
    (tests/models/test_wide_resnet.py). float64 (replays) and synchronised BatchNorm in
    training keep the op-by-op path.
    """

    def call(self, inputs, training=None, mask=None):
        training = bool(training and self.trainable)
        if self.renorm or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        if self._fusable(inputs) and not (training and self.synchronized):
            return self._fused_call(inputs, training)
        if not training:
            return super().call(inputs, training=False, mask=mask)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, compute_dtype)
        mean, variance = self._moments(inputs, mask)
        shape = ops.shape(inputs)
        count = 1
        for axis in self._reduction_axes:
            count = count * shape[axis]
        if self.synchronized:
            import tensorflow as tf  # synchronized BN exists on the TF backend only

            context = tf.distribute.get_replica_context()
            count = count * (1 if context is None else context.num_replicas_in_sync)
        count = ops.cast(count, compute_dtype)
        unbiased = variance * count / ops.maximum(count - 1, 1)
        momentum = ops.convert_to_tensor(self.momentum, dtype=compute_dtype)
        one = ops.convert_to_tensor(1.0, dtype=compute_dtype)
        moving_mean = ops.cast(self.moving_mean, compute_dtype)
        moving_variance = ops.cast(self.moving_variance, compute_dtype)
        self.moving_mean.assign(ops.cast(moving_mean * momentum + mean * (one - momentum), self.moving_mean.dtype))
        self.moving_variance.assign(
            ops.cast(moving_variance * momentum + unbiased * (one - momentum), self.moving_variance.dtype))
        outputs = ops.batch_normalization(
            x=inputs, mean=mean, variance=variance, axis=self.axis,
            offset=ops.cast(self.beta, compute_dtype) if self.center else None,
            scale=ops.cast(self.gamma, compute_dtype) if self.scale else None,
            epsilon=self.epsilon)
        return ops.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs):
        return (keras.backend.backend() == "tensorflow"
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center and self.scale
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16", "float16")
                and keras.backend.standardize_dtype(self.moving_mean.dtype) == "float32")

    def _fused_call(self, inputs, training):
        import tensorflow as tf

        # exponential_avg_factor f gives running = (1 - f) * running + f * batch; with
        # f = float32(1 - momentum), 1 - f is float32(momentum) again: the op-by-op constants.
        momentum = np.float32(self.momentum)
        factor = float(np.float32(1.0) - momentum)
        # The raw op, not tf.compat.v1.nn.fused_batch_norm: that wrapper raises epsilon to 1.001e-5.
        outputs, moving_mean, moving_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=tf.cast(self.gamma.value, "float32"), offset=tf.cast(self.beta.value, "float32"),
            mean=self.moving_mean.value, variance=self.moving_variance.value, epsilon=float(self.epsilon),
            exponential_avg_factor=factor if training else 1.0, data_format="NHWC", is_training=training)
        if training:
            self.moving_mean.assign(moving_mean)
            self.moving_variance.assign(moving_variance)
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="daso_tf")
class ReferenceLeakyReLU(keras.layers.LeakyReLU):
    """LeakyReLU whose slope has the input's precision.

    tf.nn.leaky_relu takes the slope as a float32 attribute, so under a float64 policy the
    slope would be 0.10000000149; that alone makes a float64 replay of the (chaotic)
    reference run diverge after a few steps.
    """

    def call(self, inputs):
        if keras.backend.standardize_dtype(inputs.dtype) != "float64":
            return super().call(inputs)
        slope = ops.convert_to_tensor(self.negative_slope, dtype=inputs.dtype)
        return ops.where(inputs > 0, inputs, inputs * slope)


def _batch_norm(name, synchronized=False, momentum=BN_MOMENTUM):
    return ReferenceBatchNormalization(
        momentum=momentum, epsilon=BN_EPSILON, synchronized=synchronized, name=name)


def _leaky_relu(name):
    return ReferenceLeakyReLU(negative_slope=LEAKY_SLOPE, name=name)


def _conv3x3(x, filters, stride, name):
    if stride == 1:
        # "same" pads 1 pixel on every side, as PyTorch, inside the convolution kernel (no
        # separate pad op forward and slice op backward). The Identity keeps the layer list,
        # hence the object paths of checkpoints written with a ZeroPadding2D here.
        x = keras.layers.Identity(name=f"{name}_pad")(x)
        padding = "same"
    else:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters, 3, strides=stride, padding=padding, use_bias=False,
        kernel_initializer=conv_kernel_initializer(), name=name,
    )(x)


def _residual_block(x, filters, stride, activate_before_residual, name, sync_bn, bn_momentum):
    in_filters = x.shape[-1]
    if activate_before_residual:
        x = _batch_norm(f"{name}_pre_act_bn", sync_bn, bn_momentum)(x)
        x = _leaky_relu(f"{name}_pre_act_relu")(x)
        residual = x
    else:
        residual = _batch_norm(f"{name}_bn1", sync_bn, bn_momentum)(x)
        residual = _leaky_relu(f"{name}_relu1")(residual)
    residual = _conv3x3(residual, filters, stride, f"{name}_conv1")
    residual = _batch_norm(f"{name}_bn2", sync_bn, bn_momentum)(residual)
    residual = _leaky_relu(f"{name}_relu2")(residual)
    residual = _conv3x3(residual, filters, 1, f"{name}_conv2")
    if stride >= 2 or in_filters != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, padding="valid", use_bias=False,
            kernel_initializer=conv_kernel_initializer(), name=f"{name}_identity",
        )(x)
    else:
        shortcut = x
    return keras.layers.Add(name=f"{name}_add")([shortcut, residual])


@keras.saving.register_keras_serializable(package="daso_tf")
class WideResNet(keras.Model):
    """WRN-``depth``-``width`` feature extractor: normalised images -> pooled features.

    Args:
        depth: 6n + 4 (28 for the paper's WRN-28-2).
        width: widening factor; the feature width is ``64 * width``.
        input_shape: image shape, channels last. Height and width may be None.
        synchronized_batch_norm: compute BatchNorm statistics over the global batch under a
            multi-replica strategy, so that N replicas train like one device on the
            concatenated batch (the reference's statistics span all 320 images of a step).
            Leave False on one device: its moments are computed more accurately.
        batch_norm_momentum: Keras momentum of every BatchNorm's moving statistics (0.9,
            PyTorch's default 0.1; ACR's WRN uses PyTorch's 0.001, i.e. 0.999).
    """

    def __init__(self, depth=28, width=2, input_shape=(None, None, 3),
                 synchronized_batch_norm=False, batch_norm_momentum=BN_MOMENTUM, **kwargs):
        if not 0.0 <= float(batch_norm_momentum) < 1.0:
            raise ValueError(f"batch_norm_momentum must be in [0, 1); got {batch_norm_momentum}.")
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...); got {depth}.")
        if width < 1:
            raise ValueError(f"WideResNet width must be >= 1; got {width}.")
        blocks_per_stage = (depth - 4) // 6
        filters = [16, 16 * width, 32 * width, 64 * width]

        images = keras.Input(shape=tuple(input_shape), name="images")
        x = _conv3x3(images, filters[0], 1, "init_conv")
        for stage in range(3):
            for block in range(blocks_per_stage):
                first = block == 0
                x = _residual_block(
                    x,
                    filters[stage + 1],
                    stride=2 if (first and stage > 0) else 1,
                    activate_before_residual=(first and stage == 0),
                    name=f"unit{stage + 1}_{block}",
                    sync_bn=synchronized_batch_norm,
                    bn_momentum=float(batch_norm_momentum),
                )
        x = _batch_norm("final_bn", synchronized_batch_norm, float(batch_norm_momentum))(x)
        x = _leaky_relu("final_relu")(x)
        features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        kwargs.setdefault("name", f"wrn_{depth}_{width}")
        super().__init__(inputs=images, outputs=features, **kwargs)

        self.depth = depth
        self.width = width
        self.image_input_shape = tuple(input_shape)
        self.feature_dim = filters[3]
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        self.batch_norm_momentum = float(batch_norm_momentum)

    def get_config(self):
        return {
            "batch_norm_momentum": self.batch_norm_momentum,
            "depth": self.depth,
            "width": self.width,
            "input_shape": self.image_input_shape,
            "synchronized_batch_norm": self.synchronized_batch_norm,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
