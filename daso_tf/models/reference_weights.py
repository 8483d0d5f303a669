"""Import weights from the DASO reference implementation (PyTorch, ytaek-oh/daso).

The reference model's state dict names its WRN encoder ``encoder.*`` and its linear head
``classifier.classifier.*``. Inside a reference residual block the layers live in an
``nn.Sequential`` whose indices depend on the block kind:

- the block that activates before the residual split (stage 1, block 0):
  ``pre_act.0`` BN, ``layer.0`` conv1, ``layer.1`` bn2, ``layer.3`` conv2;
- every other block: ``layer.0`` bn1, ``layer.2`` conv1, ``layer.3`` bn2, ``layer.5`` conv2;
- ``identity`` is the 1x1 projection shortcut where there is one; ``unit4.0`` is the
  final BN.

This module maps those names onto ``daso_tf.models.WideResNet``'s stable layer names and
converts layouts (conv OIHW -> HWIO, linear [out, in] -> [in, out]). BatchNorm's
``num_batches_tracked`` has no Keras counterpart and is ignored. A reference checkpoint
(``checkpoint.pth.tar``: ``{"model", "ema_model", "optimizer", "scheduler", "meta"}``; the
EMA entry is the state dict of the reference ``EMAModel`` wrapper, so its keys carry an
``ema_model.`` prefix) is read with ``load_reference_checkpoint``, which needs PyTorch.
"""

import keras
import numpy as np

_BN_FIELDS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
_IGNORED_SUFFIXES = (".num_batches_tracked",)
# Wrappers the reference (or torch.nn.DataParallel) puts in front of the model's own names.
_WRAPPER_PREFIXES = ("module.", "ema_model.")

CLASSIFIER_PREFIX = "classifier.classifier."


def _conv_to_keras(value):
    return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO


def _conv_to_reference(value):
    return np.transpose(value, (3, 2, 0, 1))  # HWIO -> OIHW


def _linear_to_keras(value):
    return np.transpose(value)  # [out, in] -> [in, out]


def _identity(value):
    return value


def _get_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _require_layer(model, name):
    layer = _get_layer(model, name)
    if layer is None:
        raise ValueError(
            f"Backbone {model.name!r} has no layer named {name!r}; reference weights can only be "
            "loaded into daso_tf.models.WideResNet (stable layer names init_conv, unit{s}_{b}_*, final_bn)."
        )
    return layer


def _variable_entries(backbone, heads):
    """[(reference name, keras variable, to_keras, to_reference)] for every mapped weight."""
    entries = []

    def conv(reference_name, layer):
        entries.append((reference_name, layer.kernel, _conv_to_keras, _conv_to_reference))

    def batch_norm(reference_prefix, layer):
        for torch_field, keras_attr in _BN_FIELDS:
            entries.append((f"{reference_prefix}.{torch_field}", getattr(layer, keras_attr), _identity, _identity))

    conv("encoder.init_conv.weight", _require_layer(backbone, "init_conv"))
    for stage in (1, 2, 3):
        if _get_layer(backbone, f"unit{stage}_0_conv1") is None:
            raise ValueError(f"Backbone {backbone.name!r} has no residual stage {stage} (layer 'unit{stage}_0_conv1').")
        block = 0
        while _get_layer(backbone, f"unit{stage}_{block}_conv1") is not None:
            keras_prefix = f"unit{stage}_{block}"
            reference_prefix = f"encoder.unit{stage}.{block}"
            pre_act_bn = _get_layer(backbone, f"{keras_prefix}_pre_act_bn")
            if pre_act_bn is not None:
                batch_norm(f"{reference_prefix}.pre_act.0", pre_act_bn)
                conv(f"{reference_prefix}.layer.0.weight", _require_layer(backbone, f"{keras_prefix}_conv1"))
                batch_norm(f"{reference_prefix}.layer.1", _require_layer(backbone, f"{keras_prefix}_bn2"))
                conv(f"{reference_prefix}.layer.3.weight", _require_layer(backbone, f"{keras_prefix}_conv2"))
            else:
                batch_norm(f"{reference_prefix}.layer.0", _require_layer(backbone, f"{keras_prefix}_bn1"))
                conv(f"{reference_prefix}.layer.2.weight", _require_layer(backbone, f"{keras_prefix}_conv1"))
                batch_norm(f"{reference_prefix}.layer.3", _require_layer(backbone, f"{keras_prefix}_bn2"))
                conv(f"{reference_prefix}.layer.5.weight", _require_layer(backbone, f"{keras_prefix}_conv2"))
            identity = _get_layer(backbone, f"{keras_prefix}_identity")
            if identity is not None:
                conv(f"{reference_prefix}.identity.weight", identity)
            block += 1
    batch_norm("encoder.unit4.0", _require_layer(backbone, "final_bn"))

    for module_name, head in heads.items():
        if not head.built:
            raise ValueError(f"Head {module_name!r} (layer {head.name!r}) is not built; build the model first.")
        prefix = f"{module_name}.classifier."  # the reference's Classifier wraps one nn.Linear
        entries.append((prefix + "weight", head.kernel, _linear_to_keras, _linear_to_keras))
        if getattr(head, "bias", None) is not None:
            entries.append((prefix + "bias", head.bias, _identity, _identity))
    return entries


def _heads(classifier_layer, heads):
    merged = {} if classifier_layer is None else {"classifier": classifier_layer}
    for module_name, layer in (heads or {}).items():
        if module_name in merged:
            raise ValueError(f"Head {module_name!r} given twice (classifier_layer and heads).")
        merged[module_name] = layer
    return merged


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def strip_wrapper_prefixes(state_dict):
    """Drops the ``module.`` / ``ema_model.`` prefixes that wrappers add to every key."""
    stripped = dict(state_dict)
    for prefix in _WRAPPER_PREFIXES:
        if stripped and all(key.startswith(prefix) for key in stripped):
            stripped = {key[len(prefix):]: value for key, value in stripped.items()}
    return stripped


def convert_reference_state_dict(state_dict, backbone, classifier_layer=None, *, heads=None, strict=True):
    """Converts a reference state dict into (Keras variable, value) assignments.

    Args:
        state_dict: mapping of reference names (``encoder.*``, ``classifier.classifier.*``;
            a ``module.``/``ema_model.`` wrapper prefix is stripped) to arrays or torch
            tensors in PyTorch layout.
        backbone: a built ``daso_tf.models.WideResNet``.
        classifier_layer: the built ``keras.layers.Dense`` head on the backbone's features,
            or None to convert the encoder only (``classifier.*`` keys are then skipped).
        heads: optional ``{reference module name: Dense layer}`` for further linear heads
            built like the reference's ``Classifier`` (e.g. ``{"abc_classifier": layer}``
            reads ``abc_classifier.classifier.weight/bias``).
        strict: if True, any key that maps to nothing raises; if False such keys (e.g.
            ``abc_classifier.*`` or ``projection.*`` heads) are ignored.

    Returns:
        A list of ``(keras.Variable, numpy.ndarray)`` pairs, values in Keras layout and in
        their source dtype (cast on assignment).

    Raises:
        ValueError naming the key that is unknown, missing or wrongly shaped.
    """
    state_dict = strip_wrapper_prefixes(state_dict)
    heads = _heads(classifier_layer, heads)
    entries = _variable_entries(backbone, heads)
    expected_names = {name for name, *_ in entries}

    unknown = []
    for key in state_dict:
        if key in expected_names or key.endswith(_IGNORED_SUFFIXES):
            continue
        if "classifier" not in heads and key.startswith("classifier."):
            continue
        unknown.append(key)
    if unknown and strict:
        raise ValueError(
            f"Unknown key(s) in the reference state dict: {', '.join(sorted(unknown))}. They map to no "
            f"weight of backbone {backbone.name!r}"
            + (f" and heads {', '.join(sorted(heads))}" if heads else "")
            + " (wrong depth/width, or an extra head: pass strict=False to ignore extra keys)."
        )
    missing = [name for name in sorted(expected_names) if name not in state_dict]
    if missing:
        raise ValueError(
            f"Missing key(s) in the reference state dict: {', '.join(missing)} (needed by backbone "
            f"{backbone.name!r}; is it the right depth/width?)."
        )

    assignments = []
    for name, variable, to_keras, to_reference in entries:
        value = _to_numpy(state_dict[name])
        expected_shape = tuple(to_reference(np.empty(tuple(variable.shape), dtype=np.uint8)).shape)
        if tuple(value.shape) != expected_shape:
            raise ValueError(
                f"Reference key {name!r} has shape {tuple(value.shape)}; the Keras weight {variable.path!r} "
                f"needs {expected_shape} in PyTorch layout."
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"Reference key {name!r} has dtype {value.dtype}; expected a floating-point array.")
        assignments.append((variable, to_keras(value)))
    return assignments


def assign_reference_state_dict(state_dict, backbone, classifier_layer=None, *, heads=None, strict=True):
    """Converts (see ``convert_reference_state_dict``) and assigns the weights in place.

    Returns the number of Keras variables assigned."""
    assignments = convert_reference_state_dict(state_dict, backbone, classifier_layer, heads=heads, strict=strict)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return len(assignments)


def export_reference_state_dict(backbone, classifier_layer=None, *, heads=None):
    """The inverse: a numpy state dict in the reference's names and PyTorch layout.

    BatchNorm ``num_batches_tracked`` is written as 0 so the result loads into the
    reference ``WRN``/``Classifier`` with ``load_state_dict(strict=True)``.
    """
    state_dict = {}
    for name, variable, _, to_reference in _variable_entries(backbone, _heads(classifier_layer, heads)):
        state_dict[name] = np.ascontiguousarray(to_reference(keras.ops.convert_to_numpy(variable)))
        if name.endswith(".running_var"):
            state_dict[name[: -len("running_var")] + "num_batches_tracked"] = np.asarray(0, dtype=np.int64)
    return state_dict


def _network_parts(model, network):
    """(backbone, {reference head name: Dense}) of one network of an algorithm model."""
    if network not in ("online", "ema"):
        raise ValueError(f"network must be 'online', 'ema' or 'both'; got {network!r}.")
    full = getattr(model, f"{network}_network", None)
    if full is None or not hasattr(full, "classifier"):
        raise ValueError(
            f"{type(model).__name__} has no `{network}_network` with a `classifier`; expected a "
            "daso_tf algorithm model (e.g. daso_tf.DASO)."
        )
    heads = {"classifier": full.classifier}
    # Auxiliary heads carry the reference's module names (e.g. ABC's "abc_classifier").
    for name, _ in getattr(full, "auxiliary_heads", ()):
        heads[name] = full.head(name)
    return full.backbone, heads


def load_reference_weights(model, state_dict, network="both", *, strict=True):
    """Loads a reference model state dict into a built daso_tf algorithm model.

    Args:
        model: a built ``daso_tf`` algorithm model, e.g. ``daso_tf.DASO`` after ``build``:
            its ``online_network``/``ema_network`` backbones, ``classifier`` heads and any
            auxiliary heads (ABC's ``abc_classifier`` reads the reference's key of that name).
        state_dict: the reference ``model`` (or ``ema_model``) state dict.
        network: ``"online"``, ``"ema"`` or ``"both"`` (the reference starts its EMA
            network as an exact copy of the online one).
        strict: see ``convert_reference_state_dict``.
    """
    networks = ("online", "ema") if network == "both" else (network,)
    if not getattr(model, "built", False):
        raise ValueError(f"{type(model).__name__} must be built before loading weights (model.build(input_shape)).")
    parts = [_network_parts(model, name) for name in networks]  # validate all before assigning
    for backbone, heads in parts:
        assign_reference_state_dict(state_dict, backbone, heads=heads, strict=strict)


def load_reference_checkpoint(path, *, weights_only=True):
    """Reads a reference checkpoint (``.pth.tar``) into numpy state dicts. Needs PyTorch.

    Returns ``{"model": {...}, "ema_model": {...} or None}`` with wrapper prefixes
    (``module.``, ``ema_model.``) stripped. A file that holds a bare state dict is
    returned as ``{"model": state_dict, "ema_model": None}``. ``weights_only=False``
    unpickles arbitrary objects (only for files you trust; old checkpoints whose ``meta``
    holds non-tensor objects need it).
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch checkpoint {str(path)!r} needs PyTorch (pip install torch); "
            "without it, convert the state dict elsewhere and pass numpy arrays to "
            "convert_reference_state_dict."
        ) from error
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises UnpicklingError / RuntimeError variants
        raise ValueError(
            f"Cannot read reference checkpoint {str(path)!r}: {error}"
            + (" (if the file is trusted, retry with weights_only=False)" if weights_only else "")
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"Reference checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a dict.")

    def to_numpy_dict(state_dict):
        return {key: _to_numpy(value) for key, value in strip_wrapper_prefixes(state_dict).items()}

    if "model" in checkpoint:
        ema = checkpoint.get("ema_model")
        return {"model": to_numpy_dict(checkpoint["model"]), "ema_model": to_numpy_dict(ema) if ema else None}
    if all(hasattr(value, "shape") for value in checkpoint.values()):
        return {"model": to_numpy_dict(checkpoint), "ema_model": None}
    raise ValueError(
        f"Reference checkpoint {str(path)!r} has keys {sorted(checkpoint)[:10]}; expected a 'model' "
        "state dict (and optionally 'ema_model')."
    )
