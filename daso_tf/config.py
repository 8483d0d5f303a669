"""Typed experiment configuration: data / model / algorithm / trainer / runtime / export.

One ``ExperimentConfig`` fully describes a run. ``experiments/`` registers one factory per
paper setting; ``run.py`` applies ``--params_override`` on top (dotted ``key=value`` pairs
or a YAML file), writes the resolved config to ``<model_dir>/params.yaml`` and, when the
directory already holds a run, refuses to resume if a data/model/algorithm key differs.
Nothing below ``run.py`` reads flags or the environment: config flows down as these objects.
"""

import dataclasses
import difflib
import os
import typing

import yaml

# Sections whose keys define what is being trained: changing one would silently mix two
# different experiments in one model_dir, so a resume with a different value is refused.
# trainer/runtime/export keys may change between runs of the same model_dir.
GUARDED_SECTIONS = ("data", "model", "algorithm")
# Where the data lives is not what it is: a resumed run may read it from another mount.
UNGUARDED_KEYS = ("data.data_dir",)

DATASETS = ("cifar10", "cifar100", "stl10")
DATA_SOURCES = ("tfds", "folder")
DISTRIBUTION_STRATEGIES = ("default", "mirrored", "multi_worker_mirrored")
MIXED_PRECISION_CHOICES = ("none", "auto", "mixed_bfloat16", "mixed_float16")
DTYPE_POLICIES = ("float32", "float64")
CHECKPOINT_CHOICES = ("latest", "best")
# Runtime switches whose best value depends on the machine: resolved when the run starts
# (daso_tf.training.loop.resolve_switches / resolve_steps_per_execution); params.yaml keeps "auto".
AUTO = "auto"


class ConfigError(ValueError):
    """A bad config key or value; the message names it and what was expected."""


@dataclasses.dataclass
class DataConfig:
    """Dataset, long-tailed split (spec/DASO.md section 5) and training-batch shape.

    ``num_labeled_head`` is N1 and ``num_unlabeled_head`` M1 (images of the head class);
    ``imbalance_labeled``/``imbalance_unlabeled`` are gamma_l/gamma_u. For STL-10 the
    unlabeled set is the whole extra split: ``num_unlabeled_head=-1``,
    ``imbalance_unlabeled=-1``. ``seed`` draws the split, the augmentations, the initial
    weights: it is the run's seed.
    """

    dataset: str = "cifar10"
    source: str = "tfds"
    data_dir: typing.Optional[str] = None
    num_valid_per_class: int = 500
    num_labeled_head: int = 1500
    num_unlabeled_head: int = 3000
    imbalance_labeled: float = 100.0
    imbalance_unlabeled: float = 100.0
    reverse_unlabeled: bool = False
    labeled_batch_size: int = 64
    unlabeled_ratio: int = 2
    image_size: int = 32
    augmentation: str = "reference"
    seed: int = 0


@dataclasses.dataclass
class ModelConfig:
    """Backbone: WRN-depth-width (the paper: WRN-28-2). ``dtype_policy`` float64 is for replays."""

    backbone: str = "wide_resnet"
    depth: int = 28
    width: int = 2
    dtype_policy: str = "float32"


@dataclasses.dataclass
class AlgorithmConfig:
    """The learner (``daso_tf.algorithms.get_algorithm(name)``) and its hyper-parameters.

    Keys a learner does not take (e.g. ``dist_temperature`` for ``fixmatch``) are not
    passed to it. Optimiser: reference SGD (Nesterov, constant lr, coupled L2).
    """

    name: str = "daso"
    warmup_steps: int = 5000
    queue_size: int = 256
    histogram_period: int = 100
    dist_temperature: float = 1.5
    proto_temperature: float = 0.05
    threshold: float = 0.95
    lambda_u: float = 1.0
    lambda_align: float = 1.0
    logit_adjust: bool = False
    logit_adjust_tau: float = 1.0
    ema_decay: float = 0.999
    learning_rate: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4


@dataclasses.dataclass
class TrainerConfig:
    """Schedule: steps, evaluation (EMA model, median of the last ``median_window``), checkpoints."""

    train_steps: int = 250_000
    eval_interval: int = 500
    eval_batches: int = 0  # 0 = the whole validation / test set
    eval_batch_size: int = 256
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3
    log_interval: int = 50
    median_window: int = 20


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how it runs; may change when a run is resumed."""

    distribution_strategy: str = "default"
    virtual_cpu_devices: int = 0  # > 1: split the CPU into N logical devices (tests, debugging)
    # none | auto (mixed_float16 on GPU, mixed_bfloat16 on CPU) | mixed_bfloat16 | mixed_float16.
    # Queue, prototypes, EMA, losses and variables stay float32; float16 uses loss scaling.
    mixed_precision: str = "none"
    # XLA-compile the whole train step (queue/histogram/EMA included); auto: on a GPU, one replica.
    jit_compile: typing.Union[bool, typing.Literal["auto"]] = AUTO
    # Train steps per host round trip (the intervals must be multiples); auto: the largest
    # divisor <= 100 of the log/eval/checkpoint intervals and of the run's first and last step.
    steps_per_execution: typing.Union[int, typing.Literal["auto"]] = AUTO
    # Weak/strong augmentation inside the (compiled) train step; auto: on a GPU, one replica.
    augment_on_device: typing.Union[bool, typing.Literal["auto"]] = AUTO
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism()


@dataclasses.dataclass
class ExportConfig:
    """``--mode=export``: SavedModel for TF Serving at ``<export_dir>/<version>``."""

    export_dir: typing.Optional[str] = None  # default <model_dir>/export
    model_name: typing.Optional[str] = None  # default: the experiment name
    version: typing.Optional[int] = None  # default: next free integer
    checkpoint: str = "latest"  # latest | best (best validation top-1)
    overwrite: bool = False


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
        """Raises ConfigError naming the first key whose value is out of range."""
        _check_choice("data.dataset", self.data.dataset, DATASETS)
        _check_choice("data.source", self.data.source, DATA_SOURCES)
        _check_choice("runtime.distribution_strategy", self.runtime.distribution_strategy, DISTRIBUTION_STRATEGIES)
        _check_choice("model.dtype_policy", self.model.dtype_policy, DTYPE_POLICIES)
        _check_choice("export.checkpoint", self.export.checkpoint, CHECKPOINT_CHOICES)
        if self.data.source == "folder" and not self.data.data_dir:
            raise ConfigError("data.source=folder needs data.data_dir (an image folder tree train/<class>/*, test/<class>/*)")
        positive = {
            "data.labeled_batch_size": self.data.labeled_batch_size,
            "data.unlabeled_ratio": self.data.unlabeled_ratio,
            "data.image_size": self.data.image_size,
            "data.num_labeled_head": self.data.num_labeled_head,
            "model.depth": self.model.depth,
            "model.width": self.model.width,
            "trainer.train_steps": self.trainer.train_steps,
            "trainer.eval_interval": self.trainer.eval_interval,
            "trainer.eval_batch_size": self.trainer.eval_batch_size,
            "trainer.checkpoint_interval": self.trainer.checkpoint_interval,
            "trainer.keep_checkpoints": self.trainer.keep_checkpoints,
            "trainer.log_interval": self.trainer.log_interval,
            "trainer.median_window": self.trainer.median_window,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key}={value}: expected a positive number")
        non_negative = {
            "data.num_valid_per_class": self.data.num_valid_per_class,
            "algorithm.warmup_steps": self.algorithm.warmup_steps,
            "trainer.eval_batches": self.trainer.eval_batches,
            "runtime.virtual_cpu_devices": self.runtime.virtual_cpu_devices,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{key}={value}: expected a number >= 0")
        if (self.model.depth - 4) % 6 != 0:
            raise ConfigError(f"model.depth={self.model.depth}: a Wide ResNet depth is 6n+4 (10, 16, 22, 28, ...)")
        if self.model.backbone != "wide_resnet":
            raise ConfigError(f"model.backbone={self.model.backbone!r}: expected 'wide_resnet'")
        _check_choice("runtime.mixed_precision", self.runtime.mixed_precision, MIXED_PRECISION_CHOICES)
        if self.runtime.mixed_precision != "none" and self.model.dtype_policy == "float64":
            raise ConfigError(f"runtime.mixed_precision={self.runtime.mixed_precision} cannot be combined "
                              "with model.dtype_policy=float64")
        if self.runtime.augment_on_device is True and self.data.augmentation != "reference":
            raise ConfigError(f"runtime.augment_on_device=true runs the reference augmentation on the device; "
                              f"data.augmentation={self.data.augmentation!r} is host-only")
        every = self.runtime.steps_per_execution
        if every == AUTO:
            return self
        if every < 1:
            raise ConfigError(f"runtime.steps_per_execution={every}: expected a positive number or auto")
        if every > 1 and self.runtime.distribution_strategy == "multi_worker_mirrored":
            raise ConfigError(f"runtime.steps_per_execution={every} fails with multi_worker_mirrored (Keras' "
                              "multi-step loop under TF 2.21 collectives); use 1 or auto")
        for key in ("eval_interval", "checkpoint_interval", "log_interval"):
            value = getattr(self.trainer, key)
            if value % every:
                raise ConfigError(f"trainer.{key}={value} must be a multiple of "
                                  f"runtime.steps_per_execution={every} (the host sees every {every}th step)")
        return self


def _check_choice(key, value, choices):
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(choices)}")


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
        coerced = coerce_value(key, value, types[key])
        if key == "name":
            config.name = coerced
            continue
        section, leaf = key.split(".", 1)
        setattr(getattr(config, section), leaf, coerced)
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
    return flatten(values)


# ----------------------------------------------------------------------------- params.yaml


PARAMS_FILE = "params.yaml"


def params_path(model_dir):
    return os.path.join(model_dir, PARAMS_FILE)


def write_params(config, model_dir):
    """Writes ``<model_dir>/params.yaml`` atomically (temp file + rename)."""
    path = params_path(model_dir)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False, default_flow_style=False)
    os.replace(tmp, path)
    return path


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


def guarded_differences(stored, requested):
    """Data/model/algorithm keys whose values differ: ``[(key, stored, requested)]``."""
    old, new = stored.flat(), requested.flat()
    differences = []
    for key in sorted(new):
        guarded = key.split(".", 1)[0] in GUARDED_SECTIONS and key not in UNGUARDED_KEYS
        if guarded and old.get(key) != new[key]:
            differences.append((key, old.get(key), new[key]))
    return differences


def describe_differences(differences):
    return ", ".join(f"{key} (run has {old!r}, requested {new!r})" for key, old, new in differences)
