"""Typed experiment configuration: data / model / algorithm / trainer / runtime / export.

One ``ExperimentConfig`` fully describes a run. ``experiments/`` registers one factory per
paper setting; ``run.py`` applies ``--params_override`` on top (dotted ``key=value`` pairs
or a YAML file), writes the resolved config to ``<model_dir>/params.yaml`` and, when the
directory already holds a run, refuses to resume if a data/model/algorithm key differs.
Nothing below ``run.py`` reads flags or the environment: config flows down as these objects.

Every key carries what it allows as field metadata (``Allowed``); ``ExperimentConfig.validate``
checks all of them with one generic checker, then the few rules that relate two keys. The
``algorithm`` keys other than ``name`` default to None: "the learner's reference value",
i.e. the default of the learner's constructor argument of that name (see AlgorithmConfig).
This module imports no TensorFlow, so bad input is refused within a fraction of a second.
"""

import dataclasses
import difflib
import math
import os
import re
import typing

import yaml

from daso_tf import io_utils
from daso_tf._validation import SERVING_MODEL_NAME
from daso_tf.data.long_tailed_data import SPLIT_PROTOCOLS, WHOLE_UNLABELED_SPLIT
from daso_tf.data.unlabeled_estimates import ESTIMATE_FILE_SUFFIXES, REFERENCE_ESTIMATES
from daso_tf.provenance import PROVENANCE_KEY, provenance

# Sections whose keys define what is being trained: changing one would silently mix two
# different experiments in one model_dir, so a resume with a different value is refused.
# trainer/runtime/export keys may change between runs of the same model_dir.
GUARDED_SECTIONS = ("data", "model", "algorithm")
# Where the data lives is not what it is: a resumed run may read it from another mount.
UNGUARDED_KEYS = ("data.data_dir",)

DATASETS = ("cifar10", "cifar100", "stl10")
DATA_SOURCES = ("tfds", "folder")
AUGMENTATIONS = ("reference", "keras_cv", "keras")
BACKBONES = ("wide_resnet",)
DISTRIBUTION_STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
MIXED_PRECISION_CHOICES = ("none", "auto", "mixed_bfloat16", "mixed_float16")
DTYPE_POLICIES = ("float32", "float64")
# The learning-rate schedules a learner's default_optimizer may offer (ACR: constant or cosine).
LR_SCHEDULES = ("constant", "cosine")
CHECKPOINT_CHOICES = ("latest", "best")
# Runtime switches whose best value depends on the machine: resolved when the run starts
# (daso_tf.training.loop.resolve_switches / resolve_steps_per_execution); params.yaml keeps "auto".
AUTO = "auto"


class ConfigError(ValueError):
    """A bad config key or value; the message names it and what was expected."""


@dataclasses.dataclass(frozen=True)
class Allowed:
    """The values one config key accepts (its dataclass field's ``metadata["allowed"]``).

    Numbers: ``low`` / ``high`` bounds (``low_open`` / ``high_open`` exclude them) and always
    finite; strings: ``choices`` or a ``pattern``. ``special`` is one more legal value,
    allowed only while the key ``special_when[0]`` equals ``special_when[1]`` (STL-10's -1).
    """

    low: typing.Optional[float] = None
    high: typing.Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: typing.Optional[tuple] = None
    pattern: typing.Optional[re.Pattern] = None
    pattern_text: str = ""
    special: typing.Optional[float] = None
    special_when: typing.Optional[tuple] = None
    special_text: str = ""

    def admits(self, value, flat):
        if self.special is not None and value == self.special:
            other_key, required = self.special_when
            return flat.get(other_key) == required
        if self.choices is not None:
            return value in self.choices
        if self.pattern is not None:
            return bool(self.pattern.match(value))
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def describe(self, kind):
        """What is allowed, in words (``kind``: "an integer" / "a number")."""
        if self.choices is not None:
            return f"one of {', '.join(self.choices)}"
        if self.pattern is not None:
            return self.pattern_text
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}" \
                   f"{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {_number(self.low)}"
        else:
            text = kind
        if self.special is not None:
            other_key, required = self.special_when
            text += f", or {_number(self.special)} ({self.special_text}) with {other_key}={required}"
        return text


def _number(value):
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def one_of(*choices):
    return Allowed(choices=tuple(choices))


def at_least(low, **special):
    return Allowed(low=low, **special)


def greater_than(low):
    return Allowed(low=low, low_open=True)


def closed_range(low, high):
    return Allowed(low=low, high=high)


def half_open_range(low, high):
    return Allowed(low=low, high=high, high_open=True)


PROBABILITY = closed_range(0, 1)  # thresholds
DECAY = half_open_range(0, 1)  # EMA decay, momentum
POSITIVE = greater_than(0)  # temperatures, learning rates, MixUp alpha
NON_NEGATIVE = at_least(0)  # loss weights, warm-up / ramp-up lengths (0 = none)
COUNT = at_least(1)  # sizes, ratios, steps, intervals
RATIO = at_least(1)  # imbalance ratios (head / tail; 1 = balanced)
DARP_ESTIMATE_PATTERN = re.compile(  # a reference estimate's name or an estimate file's path
    "^(?:" + "|".join(re.escape(name) for name in REFERENCE_ESTIMATES) + ")$|.+(?:"
    + "|".join(re.escape(suffix) for suffix in ESTIMATE_FILE_SUFFIXES) + ")$")
# STL-10's unlabeled set is its whole extra split: num_unlabeled_head / imbalance_unlabeled -1.
WHOLE_EXTRA_SPLIT_ON_STL10 = dict(special=WHOLE_UNLABELED_SPLIT, special_when=("data.dataset", "stl10"),
                                  special_text="the whole extra unlabeled split")


def option(default, allowed=None):
    """A config field whose value must satisfy ``allowed`` (None: any value of its type)."""
    return dataclasses.field(default=default, metadata={"allowed": allowed})


def learner_option(allowed=None):
    """An ``algorithm`` key: unset (None) = the learner's reference value."""
    return option(None, allowed)


@dataclasses.dataclass
class DataConfig:
    """Dataset, long-tailed split (docs/data.md section 1) and training-batch shape.

    ``num_labeled_head`` is N1 and ``num_unlabeled_head`` M1 (images of the head class);
    ``imbalance_labeled``/``imbalance_unlabeled`` are gamma_l/gamma_u. For STL-10 the
    unlabeled set is the whole extra split: ``num_unlabeled_head=-1``,
    ``imbalance_unlabeled=-1``. ``seed`` draws the split, the augmentations, the initial
    weights: it is the run's seed.
    """

    dataset: str = option("cifar10", one_of(*DATASETS))
    source: str = option("tfds", one_of(*DATA_SOURCES))
    data_dir: typing.Optional[str] = option(None)
    num_valid_per_class: int = option(500, at_least(0))
    num_labeled_head: int = option(1500, COUNT)
    num_unlabeled_head: int = option(3000, at_least(1, **WHOLE_EXTRA_SPLIT_ON_STL10))
    imbalance_labeled: float = option(100.0, RATIO)
    imbalance_unlabeled: float = option(100.0, at_least(1, **WHOLE_EXTRA_SPLIT_ON_STL10))
    reverse_unlabeled: bool = option(False)
    labeled_batch_size: int = option(64, COUNT)
    unlabeled_ratio: int = option(2, COUNT)
    image_size: int = option(32, COUNT)
    augmentation: str = option("reference", one_of(*AUGMENTATIONS))
    seed: int = option(0, closed_range(0, 2**32 - 1))  # numpy's RandomState range
    # daso: the DASO reference's seeded split; acr: ACR's (first images of each class in
    # dataset order, the unlabeled set includes the labeled images, no validation split)
    split_protocol: str = option("daso", one_of(*SPLIT_PROTOCOLS))


@dataclasses.dataclass
class ModelConfig:
    """Backbone: WRN-depth-width (the paper: WRN-28-2). ``dtype_policy`` float64 is for replays."""

    backbone: str = option("wide_resnet", one_of(*BACKBONES))
    depth: int = option(28, at_least(4))  # and 6n+4, see validate()
    width: int = option(2, COUNT)
    dtype_policy: str = option("float32", one_of(*DTYPE_POLICIES))
    # Keras convention (moving = m * moving + (1 - m) * batch): 0.9 = PyTorch's 0.1 (DASO's
    # WRN); ACR's WRN uses PyTorch's 0.001 = 0.999 here.
    batch_norm_momentum: float = option(0.9, DECAY)


@dataclasses.dataclass
class AlgorithmConfig:
    """The learner (``daso_tf.algorithms.get_algorithm(name)``) and its hyper-parameters.

    Every key but ``name`` is unset (None) by default, meaning "the learner's reference
    value": the default of the learner's constructor argument of the same name, or of its
    ``default_optimizer`` for the optimiser keys. Only the keys that are set are passed, and
    only to a learner that takes them: a key set on the command line (or in a YAML override)
    that the chosen learner does not take is refused; one set by the experiment itself is
    reported in the start-up summary and not passed. The run fills in ``total_steps``
    (trainer.train_steps) and ``seed`` (data.seed) for learners that take them.
    ``daso_tf.training.learner_arguments`` implements this contract.
    """

    name: str = option("daso")
    # FixMatch family (fixmatch, daso, fixmatch_abc) and the shared EMA
    threshold: typing.Optional[float] = learner_option(PROBABILITY)
    lambda_u: typing.Optional[float] = learner_option(NON_NEGATIVE)
    logit_adjust: typing.Optional[bool] = learner_option()
    logit_adjust_tau: typing.Optional[float] = learner_option(NON_NEGATIVE)
    ema_decay: typing.Optional[float] = learner_option(DECAY)
    # DASO (daso and the *_daso learners)
    warmup_steps: typing.Optional[int] = learner_option(NON_NEGATIVE)
    queue_size: typing.Optional[int] = learner_option(COUNT)
    histogram_period: typing.Optional[int] = learner_option(COUNT)
    dist_temperature: typing.Optional[float] = learner_option(POSITIVE)
    proto_temperature: typing.Optional[float] = learner_option(POSITIVE)
    lambda_align: typing.Optional[float] = learner_option(NON_NEGATIVE)
    abc: typing.Optional[bool] = learner_option()
    # MeanTeacher / MixMatch / ReMixMatch
    temperature: typing.Optional[float] = learner_option(POSITIVE)
    mixup_alpha: typing.Optional[float] = learner_option(POSITIVE)
    rampup_steps: typing.Optional[int] = learner_option(NON_NEGATIVE)
    lambda_kl: typing.Optional[float] = learner_option(NON_NEGATIVE)
    lambda_rot: typing.Optional[float] = learner_option(NON_NEGATIVE)
    distribution_alignment: typing.Optional[bool] = learner_option()
    alignment_history: typing.Optional[int] = learner_option(COUNT)
    # DebiasPL
    debias_tau: typing.Optional[float] = learner_option(NON_NEGATIVE)
    qhat_momentum: typing.Optional[float] = learner_option(DECAY)
    # ACR
    tau1: typing.Optional[float] = learner_option(NON_NEGATIVE)
    tau12: typing.Optional[float] = learner_option(NON_NEGATIVE)
    tau2: typing.Optional[float] = learner_option(NON_NEGATIVE)
    distribution_momentum: typing.Optional[float] = learner_option(DECAY)
    adaptation_period: typing.Optional[int] = learner_option(COUNT)
    estimation_start_step: typing.Optional[int] = learner_option(NON_NEGATIVE)
    ema_warmup: typing.Optional[bool] = learner_option()
    ema_copy_batch_norm: typing.Optional[bool] = learner_option()
    # PseudoLabel: ramp-up over rampup_ratio * trainer.train_steps
    rampup_ratio: typing.Optional[float] = learner_option(NON_NEGATIVE)
    # USADTM (threshold: cosine; warmup_steps: before pseudo-labels)
    lambda_uc: typing.Optional[float] = learner_option(NON_NEGATIVE)
    # cRT: class-aware labeled sampling; the finished run whose online encoder is re-trained on
    sampler_beta: typing.Optional[float] = learner_option(PROBABILITY)
    base_run: typing.Optional[str] = learner_option()
    # DARP (fixmatch_darp) and its estimator (darp_estim)
    darp_warmup_ratio: typing.Optional[float] = learner_option(PROBABILITY)
    darp_period: typing.Optional[int] = learner_option(COUNT)
    darp_alpha: typing.Optional[float] = learner_option(POSITIVE)
    darp_iterations: typing.Optional[int] = learner_option(COUNT)
    darp_estimate: typing.Optional[str] = learner_option(Allowed(
        pattern=DARP_ESTIMATE_PATTERN,
        pattern_text="a reference estimate (" + ", ".join(REFERENCE_ESTIMATES) + ") or the path of an estimate "
                     "file (.json written by algorithm.name=darp_estim, or a NumPy .npy/.npyz vector)"))
    holdout_per_class: typing.Optional[int] = learner_option(COUNT)
    max_condition_number: typing.Optional[float] = learner_option(POSITIVE)
    # CReST+ (fixmatch_crest, remixmatch_crest)
    num_generations: typing.Optional[int] = learner_option(COUNT)
    crest_alpha: typing.Optional[float] = learner_option(POSITIVE)
    progressive_alignment: typing.Optional[bool] = learner_option()
    alignment_temperature_min: typing.Optional[float] = learner_option(POSITIVE)
    # the optimiser (the learner's default_optimizer)
    lr_schedule: typing.Optional[str] = learner_option(one_of(*LR_SCHEDULES))
    decay_bias_and_norm: typing.Optional[bool] = learner_option()
    learning_rate: typing.Optional[float] = learner_option(POSITIVE)
    momentum: typing.Optional[float] = learner_option(DECAY)
    nesterov: typing.Optional[bool] = learner_option()
    weight_decay: typing.Optional[float] = learner_option(NON_NEGATIVE)


@dataclasses.dataclass
class TrainerConfig:
    """Schedule: steps, evaluation (EMA model, median of the last ``median_window``), checkpoints."""

    train_steps: int = option(250_000, COUNT)
    eval_interval: int = option(500, COUNT)
    eval_batches: int = option(0, at_least(0))  # 0 = the whole validation / test set
    eval_batch_size: int = option(256, COUNT)
    checkpoint_interval: int = option(500, COUNT)
    keep_checkpoints: int = option(3, COUNT)
    log_interval: int = option(50, COUNT)
    median_window: int = option(20, COUNT)


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how it runs; may change when a run is resumed."""

    distribution_strategy: str = option("default", one_of(*DISTRIBUTION_STRATEGIES))
    # > 1: split the CPU into N logical devices (tests, debugging)
    virtual_cpu_devices: int = option(0, at_least(0))
    # none | auto (mixed_float16 on GPU, mixed_bfloat16 on CPU) | mixed_bfloat16 | mixed_float16.
    # Queue, prototypes, EMA, losses and variables stay float32; float16 uses loss scaling.
    mixed_precision: str = option("none", one_of(*MIXED_PRECISION_CHOICES))
    # XLA-compile the whole train step (queue/histogram/EMA included); auto: on a GPU, one replica.
    jit_compile: typing.Union[bool, typing.Literal["auto"]] = option(AUTO)
    # Train steps per host round trip (the intervals must be multiples); auto: the largest
    # divisor <= 100 of the log/eval/checkpoint intervals and of the run's first and last step.
    steps_per_execution: typing.Union[int, typing.Literal["auto"]] = option(AUTO, COUNT)
    # Weak/strong augmentation inside the (compiled) train step; auto: on a GPU, one replica.
    augment_on_device: typing.Union[bool, typing.Literal["auto"]] = option(AUTO)
    deterministic: bool = option(False)  # tf.config.experimental.enable_op_determinism()


@dataclasses.dataclass
class ExportConfig:
    """``--mode=export``: SavedModel for TF Serving at ``<export_dir>/<version>``."""

    export_dir: typing.Optional[str] = option(None)  # default <model_dir>/export
    # default: the experiment name
    model_name: typing.Optional[str] = option(None, Allowed(
        pattern=SERVING_MODEL_NAME, pattern_text="a name of letters, digits, '_', '.', '-' "
                                                 "(no path separators, not starting with '.')"))
    version: typing.Optional[int] = option(None, COUNT)  # default: next free integer
    checkpoint: str = option("latest", one_of(*CHECKPOINT_CHOICES))  # latest | best (best validation top-1)
    overwrite: bool = option(False)
    # Largest image (height x width) the signatures accept (encoded images: checked from
    # their headers, before decoding); None: 4096 x 4096.
    max_image_pixels: typing.Optional[int] = option(None, COUNT)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole run. ``name`` is the registered experiment it started from."""

    name: str = ""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = dataclasses.field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, *, source="config"):
        config = cls()
        apply_overrides(config, flatten(values), source=source)
        return config

    def flat(self):
        """``{"data.seed": 0, ...}`` for every key (``name`` excluded)."""
        flat = flatten(self.to_dict())
        flat.pop("name", None)
        return flat

    def validate(self):
        """Raises ConfigError naming the first key whose value is not allowed.

        Each key's own constraint (``Allowed`` field metadata), then the rules relating keys.
        Reads no files (``model_dir.check_data_source`` checks the data directory).
        """
        flat, hints = self.flat(), _field_types(self)
        for section in _sections():
            for field in dataclasses.fields(getattr(self, section)):
                name, allowed = f"{section}.{field.name}", field.metadata.get("allowed")
                value, takes_auto = flat[name], _auto_or(hints[name]) is not None
                if value is None or allowed is None or (takes_auto and value == AUTO):
                    continue  # None: unset (Optional keys only; the types were checked on input)
                if not allowed.admits(value, flat):
                    finite = not isinstance(value, float) or math.isfinite(value)
                    kind = "an integer" if isinstance(value, int) else "a number" if finite else "a finite number"
                    raise ConfigError(f"{name}={value!r}: expected {allowed.describe(kind)}"
                                      f"{' or auto' if takes_auto else ''}")
        if self.data.source == "folder" and not self.data.data_dir:
            raise ConfigError("data.source=folder needs data.data_dir (an image folder tree train/<class>/*, test/<class>/*)")
        if (self.model.depth - 4) % 6 != 0:
            raise ConfigError(f"model.depth={self.model.depth}: a Wide ResNet depth is 6n+4 (10, 16, 22, 28, ...)")
        if self.runtime.mixed_precision != "none" and self.model.dtype_policy == "float64":
            raise ConfigError(f"runtime.mixed_precision={self.runtime.mixed_precision} cannot be combined "
                              "with model.dtype_policy=float64")
        if self.data.split_protocol == "acr" and self.data.num_valid_per_class != 0:
            raise ConfigError(f"data.num_valid_per_class={self.data.num_valid_per_class}: data.split_protocol=acr "
                              "has no validation split (expected 0)")
        if self.runtime.augment_on_device is True and self.data.augmentation != "reference":
            raise ConfigError(f"runtime.augment_on_device=true runs the reference augmentation on the device; "
                              f"data.augmentation={self.data.augmentation!r} is host-only")
        every = self.runtime.steps_per_execution
        if every == AUTO:
            return self
        if every > 1 and self.runtime.distribution_strategy == "multi_worker_mirrored":
            raise ConfigError(f"runtime.steps_per_execution={every} fails with multi_worker_mirrored (Keras' "
                              "multi-step loop under TF 2.21 collectives); use 1 or auto")
        for name in ("eval_interval", "checkpoint_interval", "log_interval"):
            value = getattr(self.trainer, name)
            if value % every:
                raise ConfigError(f"trainer.{name}={value} must be a multiple of "
                                  f"runtime.steps_per_execution={every} (the host sees every {every}th step)")
        return self


# ----------------------------------------------------------------------------- flat keys


def flatten(values, prefix=""):
    """Nested dict -> ``{"a.b": value}``."""
    flat = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _field_types(config):
    """``{"data.seed": int, ...}`` from the dataclass annotations."""
    types = {"name": str}
    for section in dataclasses.fields(config):
        if section.name == "name":
            continue
        hints = typing.get_type_hints(type(getattr(config, section.name)))
        for key, hint in hints.items():
            types[f"{section.name}.{key}"] = hint
    return types


def known_keys(config=None):
    return sorted(_field_types(config or ExperimentConfig()))


def closest_key(key, keys):
    """The known key that ``key`` most likely meant (misspelling or missing section), or None."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if len(same_leaf) == 1:
        return same_leaf[0]
    matches = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
    matches = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
    return leaves[matches[0]] if matches else None


def _describe(hint):
    base, optional = _unwrap_optional(hint)
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[base]
    return f"{name} or null" if optional else name


def _unwrap_optional(hint):
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _auto_or(hint):
    """``base`` for a ``Union[base, Literal["auto"]]`` hint, else None."""
    if typing.get_origin(hint) is not typing.Union:
        return None
    args = typing.get_args(hint)
    if not any(typing.get_origin(a) is typing.Literal and AUTO in typing.get_args(a) for a in args):
        return None
    return next(a for a in args if typing.get_origin(a) is not typing.Literal)


def coerce_value(key, value, hint):
    """Converts ``value`` (a YAML scalar or a string from the command line) to ``hint``."""
    base = _auto_or(hint)
    if base is not None:
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        try:
            return coerce_value(key, value, base)
        except ConfigError:
            raise ConfigError(f"{key}={value!r}: expected {_describe(base)} or auto") from None
    base, optional = _unwrap_optional(hint)
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", "~", ""):
            return None
        if base is str:
            return text
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}=null: expected {_describe(hint)}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
    elif base is int:
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            return value
        elif isinstance(value, float) and value.is_integer():
            return int(value)
        elif isinstance(value, str):
            try:
                number = float(value)
                if number.is_integer():
                    return int(number)
            except ValueError:
                pass
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key}={value!r}: expected {_describe(hint)}")


def apply_overrides(config, overrides, *, source="--params_override"):
    """Sets dotted keys on ``config`` in place; unknown keys and bad values raise ConfigError."""
    types = _field_types(config)
    for key, value in overrides.items():
        if key not in types:
            suggestion = closest_key(key, list(types))
            hint = f"; did you mean '{suggestion}'?" if suggestion else f"; known sections: {', '.join(s for s in _sections())}"
            raise ConfigError(f"unknown config key '{key}' in {source}{hint}")
        set_value(config, key, coerce_value(key, value, types[key]))
    return config


def _sections():
    return [f.name for f in dataclasses.fields(ExperimentConfig) if f.name != "name"]


def parse_overrides(text):
    """``--params_override`` -> ``{dotted_key: raw value}``.

    ``text`` is comma-separated ``key=value`` items; an item without ``=`` names a YAML
    file (nested mapping of sections, or dotted keys). Later items win.
    """
    overrides = {}
    if not text or not text.strip():
        return overrides
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            key, value = item.split("=", 1)
            key = key.strip()
            if not key:
                raise ConfigError(f"--params_override item '{item}': missing key before '='")
            overrides[key] = value
        elif os.path.isfile(item):
            overrides.update(load_yaml_overrides(item))
        else:
            raise ConfigError(
                f"--params_override item '{item}' is neither key=value nor an existing YAML file"
            )
    return overrides


def load_yaml_overrides(path):
    """The config keys of a YAML file (the ``provenance`` record of a params.yaml is skipped)."""
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError(f"params file {path} is not valid YAML: {first_line}") from None
    except OSError as error:
        raise ConfigError(f"cannot read params file {path}: {error.strerror}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"params file {path}: expected a mapping of config sections, got {type(values).__name__}")
    values = {key: value for key, value in values.items() if key != PROVENANCE_KEY}
    return flatten(values)


# ----------------------------------------------------------------------------- params.yaml


PARAMS_FILE = "params.yaml"


def params_path(model_dir):
    return os.path.join(model_dir, PARAMS_FILE)


def write_params(config, model_dir):
    """Writes ``<model_dir>/params.yaml`` durably and atomically (``io_utils.write_atomic``).

    Besides the config it records what wrote it (``provenance``: daso_tf version, git commit,
    TF/Keras versions), which is metadata: reading the file back ignores it.
    """
    text = yaml.safe_dump({**config.to_dict(), PROVENANCE_KEY: provenance()}, sort_keys=False,
                          default_flow_style=False)
    return io_utils.write_atomic(params_path(model_dir), text)


def read_params(model_dir):
    """The config stored in ``<model_dir>/params.yaml``, or None when there is none."""
    path = params_path(model_dir)
    if not os.path.exists(path):
        return None
    values = load_yaml_overrides(path)
    known = set(known_keys())
    # Keys this version no longer knows cannot be compared or restored: report them.
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise ConfigError(f"{path} has keys this version does not know: {', '.join(unknown)}")
    config = ExperimentConfig()
    apply_overrides(config, values, source=path)
    return config


def is_guarded(name):
    """Whether a resumed run must keep the value of key ``name`` (see GUARDED_SECTIONS)."""
    return name.split(".", 1)[0] in GUARDED_SECTIONS and name not in UNGUARDED_KEYS


def guarded_differences(stored, requested):
    """Data/model/algorithm keys whose values differ: ``[(key, stored, requested)]``.

    A key left unset (None) in ``requested`` is no difference: it keeps the run's value
    (``fill_unset``).
    """
    old, new = stored.flat(), requested.flat()
    differences = []
    for name in sorted(new):
        if is_guarded(name) and new[name] is not None and old.get(name) != new[name]:
            differences.append((name, old.get(name), new[name]))
    return differences


def fill_unset(config, stored):
    """Gives every unset (None) data/model/algorithm key of ``config`` the value ``stored``
    has (in place).

    A re-run that leaves an algorithm key unset continues with the run's value; params.yaml
    files written before the algorithm keys became optional hold every value explicitly.
    """
    for name, value in stored.flat().items():
        if is_guarded(name) and value is not None and get_value(config, name) is None:
            set_value(config, name, value)
    return config


def changed_keys(config, names, *baselines):
    """The ``names`` whose value in ``config`` differs from the value in each baseline config.

    ``run.py`` passes the keys the user overrode and, as baselines, the experiment's config
    and the stored run's (None when there is none): an override that repeats what the
    experiment or the run already has is not a change by the user.
    """
    baselines = [b for b in baselines if b is not None]
    return sorted(n for n in names if n != "name"
                  and all(get_value(config, n) != get_value(b, n) for b in baselines))


def get_value(config, name):
    if name == "name":
        return config.name
    section, leaf = name.split(".", 1)
    return getattr(getattr(config, section), leaf)


def set_value(config, name, value):
    if name == "name":
        config.name = value
        return
    section, leaf = name.split(".", 1)
    setattr(getattr(config, section), leaf, value)


def describe_differences(differences):
    def shown(value):
        return "unset" if value is None else repr(value)

    return ", ".join(f"{name} (run has {shown(old)}, requested {shown(new)})" for name, old, new in differences)
