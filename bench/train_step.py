"""Training-step throughput of a learner as run.py builds it, input pipeline included or not.

    python -m bench.train_step --experiment cifar10_lt_n1500 --algorithm daso \
        --depth 28 --width 2 --batch 64 --ratio 2 --precision float32 --jit_compile 0 \
        --steps_per_execution 1 --input both --steps 10 --warmup 2

Prints one JSON object: median seconds per step, steps/s and images/s (images = the
B + 2*mu*B views the online network sees per step, as in ``bench.input_pipeline``) for

- ``input_excluded``: one training batch (drawn once from the real stream) kept in device
  memory and fed again every step;
- ``input_included``: ``daso_tf.data.train_stream`` on the experiment's data (the offline
  CIFAR-10 copy, else random uint8 images) feeding Keras' train function exactly as
  ``fit`` does (``steps_per_execution`` steps per call, tf.data prefetching meanwhile);

then the stream alone (``input_pipeline_images_per_second``), peak host / device memory,
the device name, versions, and the load average when timing started and ended.

``graph``: the size of the work itself, which does not depend on the machine's load: the
ops of the traced train step (``tf.function(model.train_step)``, nested functions included;
``op_types`` the most frequent), and with ``--jit_compile 1`` the XLA clusters Keras' train
function runs per step and the HLO instructions of the step (``--optimized_hlo 1``: also
after XLA's optimisation, whose top-level instructions are the kernels run per step).

DASO is timed in its active phase (``--daso_warmup_steps 0``, the default): blending,
alignment loss and queue/histogram updates all run, as in ~98% of a paper run.

Each timed call runs ``steps_per_execution`` steps and then reads the loss (the only host
synchronisation, needed to stop the clock); the per-step time is the call time divided by
``steps_per_execution``, the median taken over ``ceil(steps / steps_per_execution)`` calls
after ``warmup`` untimed calls (tracing / XLA compilation). Runs unchanged on a GPU.
"""

import argparse
import itertools
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import common  # noqa: E402

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
INPUTS = ("synthetic", "pipeline", "both")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="cifar10_lt_n1500",
                        help="registered experiment whose data split and hyper-parameters are used")
    parser.add_argument("--algorithm", default=None, help="learner name (default: the experiment's)")
    parser.add_argument("--depth", type=int, default=28)
    parser.add_argument("--width", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="labeled batch size B")
    parser.add_argument("--ratio", type=int, default=2, help="unlabeled ratio mu")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--jit_compile", type=int, default=0, choices=(0, 1))
    parser.add_argument("--steps_per_execution", type=int, default=1)
    parser.add_argument("--input", default="both", choices=INPUTS,
                        help="synthetic = input excluded, pipeline = input included")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (tracing, XLA)")
    parser.add_argument("--input_batches", type=int, default=None,
                        help="batches pulled to time the stream alone (default: max(steps, 20); 0: skip)")
    parser.add_argument("--intra_op_threads", type=int, default=0, help="0: TensorFlow's default")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="0: TensorFlow's default")
    parser.add_argument("--data", default="auto", choices=("auto", "cifar10_jpeg", "random"))
    parser.add_argument("--augment_on_device", type=int, default=0, choices=(0, 1),
                        help="1: the stream yields raw uint8 images, the train step augments them")
    parser.add_argument("--daso_warmup_steps", type=int, default=0,
                        help="DASO's warm-up P (algorithm.warmup_steps); 0: timed in the active phase")
    parser.add_argument("--optimized_hlo", type=int, default=0, choices=(0, 1),
                        help="with --jit_compile 1: also count the optimised HLO (one extra XLA compile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("depth", "width", "batch", "ratio", "steps_per_execution", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; got {getattr(args, name)}.")
    if args.warmup < 0 or args.daso_warmup_steps < 0 or (args.input_batches is not None and args.input_batches < 0):
        parser.error("--warmup, --daso_warmup_steps and --input_batches must be >= 0.")
    if (args.depth - 4) % 6:
        parser.error(f"--depth {args.depth}: a Wide ResNet depth is 6n+4 (10, 16, 22, 28, ...).")
    if args.input_batches is None:
        args.input_batches = max(args.steps, 20)
    return args


def experiment_config(args):
    """The experiment's config with the benchmark's model, batch and runtime settings."""
    from daso_tf.experiments.registry import get_experiment

    config = get_experiment(args.experiment)
    if args.algorithm:
        config.algorithm.name = args.algorithm
    config.model.depth, config.model.width = args.depth, args.width
    config.data.labeled_batch_size, config.data.unlabeled_ratio = args.batch, args.ratio
    config.data.seed = args.seed
    config.algorithm.warmup_steps = args.daso_warmup_steps
    runtime = config.runtime
    runtime.jit_compile = bool(args.jit_compile)
    runtime.mixed_precision = "none" if args.precision == "float32" else args.precision
    runtime.steps_per_execution = args.steps_per_execution
    runtime.augment_on_device = bool(args.augment_on_device)
    every = args.steps_per_execution  # run.py wants intervals that are multiples of it
    for key in ("eval_interval", "checkpoint_interval", "log_interval"):
        setattr(config.trainer, key, every * math.ceil(getattr(config.trainer, key) / every))
    return config.validate()


def build_model(config, lt_data):
    """The learner exactly as run.py builds and compiles it (precision policy included)."""
    import tensorflow as tf

    from daso_tf.training.loop import build_model as build_training_model
    from daso_tf.training.loop import set_precision_policy

    set_precision_policy(config)
    return build_training_model(config, lt_data, tf.distribute.get_strategy())


def train_stream(config, lt_data, model, augment_on_device):
    from daso_tf.data import train_stream as make_stream

    kwargs = dict(labeled_batch_size=config.data.labeled_batch_size,
                  unlabeled_ratio=config.data.unlabeled_ratio, seed=config.data.seed,
                  augmentation=config.data.augmentation, output_size=config.data.image_size,
                  unlabeled_views=tuple(getattr(model, "unlabeled_views", ("weak", "strong"))) or ("weak",))
    return make_stream(lt_data, augment_on_device=augment_on_device, **kwargs)


def time_calls(train_function, iterator, calls, warmup, steps_per_execution):
    """Seconds per step of each of ``calls`` timed calls, after ``warmup`` untimed ones."""
    import numpy as np

    seconds, logs = [], None
    for index in range(warmup + calls):
        start = time.perf_counter()
        logs = train_function(iterator)
        float(np.asarray(logs["loss"]))  # the one host sync of a call
        if index >= warmup:
            seconds.append((time.perf_counter() - start) / steps_per_execution)
    return seconds, {key: float(np.asarray(value)) for key, value in logs.items()}


def graph_report(model, dataset, train_function, optimized_hlo=False):
    """Op counts of the train step (load-independent); see the module docstring."""
    import collections
    import re

    import tensorflow as tf

    batch = next(iter(dataset))
    graph_def = tf.function(model.train_step).get_concrete_function(batch).graph.as_graph_def()
    op_types = collections.Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        op_types.update(node.op for node in function.node_def)
    report = {"train_step_ops": sum(op_types.values()), "op_types": dict(op_types.most_common(12))}
    if not model.jit_compile:
        return report
    report["xla_clusters_per_step"] = xla_clusters(train_function, dataset)
    compiled = tf.function(model.train_step, jit_compile=True)
    instruction = re.compile(r"^\s+(?:ROOT )?%?[\w.\-]+ = ", re.M)
    report["hlo_instructions"] = len(instruction.findall(compiled.experimental_get_compiler_ir(batch)(stage="hlo")))
    if optimized_hlo:
        text = compiled.experimental_get_compiler_ir(batch)(stage="optimized_hlo")
        entry = text[text.index("\nENTRY"):].split("\n}")[0]
        report["optimized_hlo_instructions"] = len(instruction.findall(text))
        report["optimized_hlo_top_level"] = len(instruction.findall(entry))
        report["optimized_hlo_fusions"] = len(re.findall(r" fusion\(", entry))
    return report


def xla_clusters(train_function, dataset):
    """Call sites of XLA-compiled functions in the graph Keras' train function runs on a
    dataset iterator, each executed once per step (None if Keras keeps that graph elsewhere
    than this looks)."""
    import inspect

    step_loop = inspect.getclosurevars(train_function).nonlocals.get("multi_step_on_iterator")
    if not hasattr(step_loop, "get_concrete_function"):
        return None
    graph_def = step_loop.get_concrete_function(iter(dataset)).graph.as_graph_def()
    library = {function.signature.name: function for function in graph_def.library.function}
    compiled = {name for name, function in library.items()
                if "_XlaMustCompile" in function.attr and function.attr["_XlaMustCompile"].b}
    # Call sites outside compiled functions (those inside are part of their cluster).
    nodes = list(graph_def.node) + [node for name, function in library.items() if name not in compiled
                                    for node in function.node_def]
    return sum(1 for node in nodes if "f" in node.attr and node.attr["f"].func.name in compiled)


def stream_images_per_second(dataset, batches, images_per_step):
    # Timed from the iterator's creation (the map functions were traced when the dataset was
    # built), as bench.input_pipeline does: nothing is computed ahead of the clock.
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in range(batches):
        next(iterator)
    return batches * images_per_step / (time.perf_counter() - start)


def run(args):
    common.set_threads(args.intra_op_threads, args.inter_op_threads)
    import keras
    import tensorflow as tf

    config = experiment_config(args)
    lt_data, data_origin = common.long_tailed_data(config.data, args.data)
    model = build_model(config, lt_data)
    model.make_train_function()
    train_function = model.train_function
    images_per_step = args.batch * (1 + 2 * args.ratio)
    calls = math.ceil(args.steps / args.steps_per_execution)
    dataset = train_stream(config, lt_data, model, config.runtime.augment_on_device)

    result = {
        "benchmark": "train_step",
        "experiment": args.experiment, "algorithm": config.algorithm.name,
        "depth": args.depth, "width": args.width, "batch": args.batch, "ratio": args.ratio,
        "precision": args.precision, "jit_compile": bool(args.jit_compile),
        "steps_per_execution": args.steps_per_execution, "augment_on_device": bool(args.augment_on_device),
        "intra_op_threads": args.intra_op_threads, "inter_op_threads": args.inter_op_threads,
        "daso_warmup_steps": args.daso_warmup_steps,
        "steps": calls * args.steps_per_execution, "warmup_calls": args.warmup,
        "images_per_step": images_per_step, "data": data_origin,
        **common.device_report(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "load_average_start": common.load_average(),
        "input_excluded": None, "input_included": None, "input_pipeline_images_per_second": None,
    }
    common.reset_device_peak_memory()
    if args.input in ("synthetic", "both"):
        # One batch copied to the device once, then fed again every step (no tf.data).
        batch = tf.nest.map_structure(tf.identity, next(iter(dataset)))
        seconds, logs = time_calls(train_function, itertools.repeat(batch), calls, args.warmup,
                                   args.steps_per_execution)
        result["input_excluded"] = dict(common.summarize_times(seconds, images_per_step), last_logs=logs)
    if args.input in ("pipeline", "both"):
        iterator = iter(dataset)
        seconds, logs = time_calls(train_function, iterator, calls, args.warmup, args.steps_per_execution)
        result["input_included"] = dict(common.summarize_times(seconds, images_per_step), last_logs=logs)
        del iterator
    result["load_average_end"] = common.load_average()
    result["peak_host_memory_mib"], result["peak_device_memory_mib"] = common.peak_memory_mib()
    result["graph"] = graph_report(model, dataset, train_function, args.optimized_hlo)
    if args.input_batches:
        rate = stream_images_per_second(dataset, args.input_batches, images_per_step)
        result["input_pipeline_images_per_second"] = round(rate, 1)
        consumed = (result["input_included"] or result["input_excluded"])["images_per_second"]
        result["input_pipeline_over_train_step"] = round(rate / consumed, 2)
    timed = result["input_included"] or result["input_excluded"]
    if result["device_type"] == "CPU":
        result["reference_pytorch_cpu_seconds_per_step"] = common.REFERENCE_CPU_SECONDS_PER_STEP
        result["seconds_per_step_over_reference"] = round(
            timed["seconds_per_step_median"] / common.REFERENCE_CPU_SECONDS_PER_STEP, 3)
    return result


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
