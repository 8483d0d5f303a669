"""A backbone plus a linear classifier, with pixel normalisation inside."""

import keras
from keras import ops

from daso_tf.models.wide_resnet import classifier_kernel_initializer


@keras.saving.register_keras_serializable(package="daso_tf")
class ClassifierNetwork(keras.Model):
    """pixels -> (normalise) -> backbone features -> linear logits.

    The algorithms keep two of these, the online network and its EMA copy; the EMA copy is
    what evaluation, prediction and export use.

    Args:
        backbone: a Keras model mapping normalised float images [B, H, W, 3] (channels last)
            to features [B, D].
        num_classes: K, the width of the linear head.
        normalization: ``(mean, std)`` per channel, or None. When set, inputs are pixel
            values in [0, 255] (uint8 or float) and ``(x / 255 - mean) / std`` is computed
            inside, in the variable dtype (float32, or float64 under a float64 policy) before
            the backbone casts to its compute dtype.
        auxiliary_heads: optional ``[(name, units), ...]``: extra linear heads on the same
            features (e.g. ABC's balanced classifier, ReMixMatch's rotation head), created
            after ``classifier`` and initialised like it (torch xavier_normal, zero bias).
        output_head: the head ``call`` returns ("classifier", or an auxiliary head's name,
            e.g. ABC evaluates with its balanced head). ``features_and_logits`` always
            returns the ``classifier`` logits.
    """

    def __init__(self, backbone, num_classes, normalization=None, auxiliary_heads=None,
                 output_head="classifier", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise TypeError(f"backbone must be a Keras model or layer; got {type(backbone).__name__}.")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}.")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        if normalization is not None:
            mean, std = normalization
            mean, std = [float(m) for m in mean], [float(s) for s in std]
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise ValueError(
                    f"normalization must be ((m, m, m), (s, s, s)) with s > 0; got {normalization}."
                )
            normalization = (tuple(mean), tuple(std))
        self.normalization = normalization
        self.classifier = keras.layers.Dense(
            self.num_classes,
            kernel_initializer=classifier_kernel_initializer(),
            bias_initializer="zeros",
            name="classifier",
        )
        self.auxiliary_heads = tuple((str(name), int(units)) for name, units in (auxiliary_heads or ()))
        for name, units in self.auxiliary_heads:
            if not name.isidentifier() or name == "classifier" or hasattr(self, name) or units < 1:
                raise ValueError(f"auxiliary_heads: invalid or duplicate head ({name!r}, {units}).")
            setattr(self, name, keras.layers.Dense(
                units, kernel_initializer=classifier_kernel_initializer(), bias_initializer="zeros",
                name=name))
        head_names = ("classifier",) + tuple(name for name, _ in self.auxiliary_heads)
        if output_head not in head_names:
            raise ValueError(f"output_head must be one of {head_names}; got {output_head!r}.")
        self.output_head = output_head

    def preprocess(self, images):
        dtype = self.variable_dtype
        images = ops.cast(images, dtype)
        if self.normalization is None:
            return images
        mean = ops.convert_to_tensor(self.normalization[0], dtype=dtype)
        std = ops.convert_to_tensor(self.normalization[1], dtype=dtype)
        return (images / ops.convert_to_tensor(255.0, dtype=dtype) - mean) / std

    def features(self, images, training=False):
        """Pooled backbone features [B, D]."""
        return self.backbone(self.preprocess(images), training=training)

    def features_and_logits(self, images, training=False):
        features = self.features(images, training=training)
        return features, self.classifier(features)

    def head(self, name):
        """The linear head called ``name`` ("classifier" or an auxiliary head)."""
        if name != "classifier" and name not in dict(self.auxiliary_heads):
            raise ValueError(f"{self.name} has no head {name!r}.")
        return getattr(self, name)

    def build_heads(self, features):
        """Create the variables of every head for ``features`` [B, D]."""
        self.classifier(features)
        for name, _ in self.auxiliary_heads:
            getattr(self, name)(features)

    def call(self, images, training=False):
        return self.head(self.output_head)(self.features(images, training=training))

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "normalization": self.normalization,
            "auxiliary_heads": [list(head) for head in self.auxiliary_heads],
            "output_head": self.output_head,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
