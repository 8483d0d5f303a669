"""Where a train step's time goes: a TensorFlow profiler trace summarised as top ops.

    python -m bench.profile_step --depth 28 --width 1 --batch 4 --steps 10
    python -m bench.profile_step --summarize /tmp/trace --steps 10    # an existing trace

Builds the learner as ``bench.train_step`` does (run.py's model, precision policy, XLA and
steps_per_execution settings; DASO in its active phase), runs ``--warmup`` untimed calls of
Keras' train function on one batch kept in memory (input excluded), then traces ``--steps``
steps with ``tf.profiler.experimental`` and prints one JSON object per step of the trace:

- ``wall_ms``: the traced calls' time per step (profiler overhead included);
- ``host``: op executions per step on TensorFlow's compute threads, their summed time
  (``op_ms``; two threads may run ops at once) and the time at least one thread ran an op
  (``busy_ms``); ``idle_ms`` = wall - busy is the per-step time no op ran: the Python call,
  the executor's scheduling, waiting for the input;
- ``device`` (GPU only): kernels per step and their summed time;
- ``top_ops``: the op types (XLA: the kernel kinds, e.g. ``convolution``, ``*_fusion``)
  with the most time: executions and milliseconds per step, share of the op time.

The trace stays in ``--trace_dir`` (default: a temporary directory, deleted) and can be
opened in TensorBoard's profile plugin.
"""

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runtime bookkeeping events in the host plane (not ops); XLA kernels and TF ops remain.
_RUNTIME_EVENT = re.compile(
    r"^(ThreadpoolListener|ExecutorState|ThunkExecutor|end: |Memory|Iterator|Parallel|Prefetch|TFE_|Eager"
    r"|KernelAndDevice|Function|Validate|InstantiatedCaptured|CpuExecutable|BlockUntilReady|ExecutorDone"
    r"|PjRt|Xla|Tf|tf_|Op|\$)")
_TF_OP = re.compile(r"^[^:]+:(_?[A-Z][A-Za-z0-9_]*)$")  # "scope/name:OpType"
_XLA_KERNEL = re.compile(r"^([A-Za-z][\w\-]*?)(\.\d+)?$")  # "transpose_copy_fusion.66"


def parse_args(argv=None):
    from bench import train_step

    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="cifar10_lt_n1500")
    parser.add_argument("--algorithm", default=None)
    parser.add_argument("--depth", type=int, default=28)
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--ratio", type=int, default=2)
    parser.add_argument("--precision", default="float32", choices=train_step.PRECISIONS)
    parser.add_argument("--jit_compile", type=int, default=0, choices=(0, 1))
    parser.add_argument("--steps_per_execution", type=int, default=1)
    parser.add_argument("--augment_on_device", type=int, default=0, choices=(0, 1))
    parser.add_argument("--daso_warmup_steps", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10, help="traced steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--top", type=int, default=15, help="op types listed")
    parser.add_argument("--data", default="random", choices=("auto", "cifar10_jpeg", "random"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace_dir", default=None, help="keep the trace here")
    parser.add_argument("--summarize", default=None, metavar="TRACE_DIR",
                        help="only summarise the trace in TRACE_DIR (of --steps steps)")
    args = parser.parse_args(argv)
    if min(args.depth, args.width, args.batch, args.ratio, args.steps, args.steps_per_execution) < 1:
        parser.error("--depth, --width, --batch, --ratio, --steps and --steps_per_execution must be >= 1.")
    if args.steps % args.steps_per_execution:
        parser.error("--steps must be a multiple of --steps_per_execution.")
    return args


def trace(args, trace_dir):
    """Runs the warm-up and the traced calls; returns the traced wall seconds."""
    import itertools

    import numpy as np
    import tensorflow as tf

    from bench import common, train_step

    config = train_step.experiment_config(args)
    config.algorithm.warmup_steps = args.daso_warmup_steps
    lt_data, _ = common.long_tailed_data(config.data, args.data)
    model = train_step.build_model(config, lt_data)
    model.make_train_function()
    dataset = train_step.train_stream(config, lt_data, model, config.runtime.augment_on_device)
    batches = itertools.repeat(tf.nest.map_structure(tf.identity, next(iter(dataset))))
    for _ in range(args.warmup):
        float(np.asarray(model.train_function(batches)["loss"]))
    tf.profiler.experimental.start(trace_dir)
    start = time.perf_counter()
    for _ in range(args.steps // args.steps_per_execution):
        float(np.asarray(model.train_function(batches)["loss"]))
    seconds = time.perf_counter() - start
    tf.profiler.experimental.stop()
    return seconds


def _op_type(name):
    match = _TF_OP.match(name)
    if match:
        return match.group(1)
    if _RUNTIME_EVENT.match(name) or ":" in name or " " in name:
        return None
    match = _XLA_KERNEL.match(name)
    return match.group(1) if match else None


def summarize(trace_dir, steps, top=15, wall_seconds=None):
    """The summary of the newest ``*.xplane.pb`` under ``trace_dir`` (see the module docstring)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    time_ps, count, intervals = collections.Counter(), collections.Counter(), []
    device_ps, device_kernels = 0, 0
    for plane in space.planes:
        if plane.name.startswith("/device:GPU"):
            for line in plane.lines:
                if "stream" in line.name.lower():
                    device_kernels += len(line.events)
                    device_ps += sum(event.duration_ps for event in line.events)
            continue
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if line.name.startswith(("tf_data", "python")):  # input pipeline, Python thread
                continue
            for event in line.events:
                op_type = _op_type(plane.event_metadata[event.metadata_id].name)
                if op_type is None:
                    continue
                time_ps[op_type] += event.duration_ps
                count[op_type] += 1
                begin = line.timestamp_ns * 1000 + event.offset_ps
                intervals.append((begin, begin + event.duration_ps))
    busy_ps, end = 0, None
    for begin, finish in sorted(intervals):
        if end is None or begin > end:
            busy_ps += 0 if end is None else end - first
            first, end = begin, finish
        else:
            end = max(end, finish)
    if end is not None:
        busy_ps += end - first
    total_ps = sum(time_ps.values()) or 1
    per_step_ms = 1e-9 / steps
    summary = {"trace": paths[-1], "steps": steps}
    if wall_seconds is not None:
        summary["wall_ms"] = round(wall_seconds * 1e3 / steps, 2)
    summary["host"] = {"ops": round(sum(count.values()) / steps, 1),
                       "op_ms": round(total_ps * per_step_ms, 2), "busy_ms": round(busy_ps * per_step_ms, 2)}
    if wall_seconds is not None:
        summary["host"]["idle_ms"] = round(summary["wall_ms"] - summary["host"]["busy_ms"], 2)
    if device_kernels:
        summary["device"] = {"kernels": round(device_kernels / steps, 1), "kernel_ms": round(device_ps * per_step_ms, 2)}
    summary["top_ops"] = [
        {"op": op_type, "per_step": round(count[op_type] / steps, 1), "ms": round(ps * per_step_ms, 2),
         "share": round(ps / total_ps, 3)}
        for op_type, ps in time_ps.most_common(top)]
    return summary


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        result = summarize(args.summarize, args.steps, args.top)
    else:
        from bench import common

        with tempfile.TemporaryDirectory() as temporary:
            trace_dir = args.trace_dir or temporary
            load = common.load_average()
            seconds = trace(args, trace_dir)
            result = summarize(trace_dir, args.steps, args.top, wall_seconds=seconds)
            result["load_average_start"] = load
            if not args.trace_dir:
                result["trace"] = None
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
