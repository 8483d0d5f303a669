"""One-shot check of a GPU machine: training throughput grid, then a short real training run.

    python -m bench.gpu_check [--out gpu_check.json] [--model_dir DIR] [--report_dir DIR]
    python -m bench.gpu_check --smoke          # tiny model, a few steps, on the CPU too

Within ``--budget_s`` seconds (default 480) in total it prints one JSON object:

1. ``throughput``: FixMatch + DASO, WRN-28-2, B=64, mu=2, input pipeline included, for a
   grid of float32 / mixed_float16 x XLA off / on x augment_on_device off / on x
   steps_per_execution 1 / 10, most informative settings first. Each configuration is one
   ``python -m bench.train_step`` process (the learner built exactly as run.py builds it, on
   the experiment's split of the offline CIFAR-10 copy; ``--steps`` timed steps after
   ``--warmup`` untimed calls): steps/s, images/s, seconds per step, peak device memory, and
   the process's wall time (start-up, data, tracing and XLA compilation included). When the
   time left for the grid (the budget minus ``--train_reserve_s``) runs out, the remaining
   configurations are listed in ``skipped`` instead;
2. ``device``, ``device_type``, the peak device memory over the grid;
3. ``training``: ``run.py --experiment=cifar10_lt_n1500`` on the unzipped offline JPEG copy
   (``data.source=folder``) for ``--train_steps`` steps (fewer when the measured speed says
   they would not fit in the time left), DASO warm-up at half of them, with the fastest
   measured configuration's runtime settings; its test top-1 (latest, median of the
   evaluations, logit-adjusted), head/medium/tail, steps done and wall time, read from the
   run's results.json.

Every step runs in a child process with a timeout (the time left), so a slow compilation
cannot overrun the budget; ``--out`` is rewritten after every step, so an interrupted check
keeps what it measured. ``--smoke``: WRN-10-1, B=4, 2 timed steps on random images, two
configurations without XLA, and a 4-step run on a few images per class (a CPU: one to two minutes).
"""

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import common

PRECISIONS = ("float32", "mixed_float16")
EXPERIMENT = "cifar10_lt_n1500"
# Most informative first: the baseline, then each GPU switch added one at a time.
PRIORITY = [
    ("float32", 0, 0, 1), ("mixed_float16", 0, 0, 1), ("mixed_float16", 1, 0, 1),
    ("mixed_float16", 1, 1, 1), ("mixed_float16", 1, 1, 10), ("mixed_float16", 0, 1, 10),
    ("float32", 1, 1, 10), ("mixed_float16", 0, 0, 10),
]
GRID_KEYS = ("precision", "jit_compile", "augment_on_device", "steps_per_execution")
# Per-process fields of bench.train_step kept in each throughput row.
KEPT = ("steps_per_second", "images_per_second", "seconds_per_step_median")
# (No XLA in the smoke grid: compiling the train step takes a CPU minutes.)
SMOKE_GRID = [("float32", 0, 0, 1), ("float32", 0, 1, 2)]
# Smoke training: a few images per class; the split below must fit in them.
SMOKE_PER_CLASS = (26, 4)
SMOKE_OVERRIDES = (
    "data.num_valid_per_class=2,data.num_labeled_head=10,data.num_unlabeled_head=12,data.imbalance_labeled=5,"
    "data.imbalance_unlabeled=5,data.labeled_batch_size=4,model.depth=10,model.width=1,algorithm.histogram_period=2,"
    "algorithm.queue_size=4,trainer.eval_interval=2,trainer.checkpoint_interval=2,trainer.log_interval=2,"
    "trainer.eval_batch_size=20")
EVAL_INTERVAL = 500
# Time run.py needs besides the steps (start-up, decoding the JPEGs, tracing, evaluations).
TRAINING_OVERHEAD_S = 120


def grid(smoke):
    """Every configuration, most informative first: ``[(precision, jit, augment_on_device, spe)]``."""
    if smoke:
        return list(SMOKE_GRID)
    rest = [c for c in itertools.product(PRECISIONS, (0, 1), (0, 1), (1, 10)) if c not in PRIORITY]
    return PRIORITY + rest


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model and steps (runs on a CPU in one to two minutes)")
    parser.add_argument("--budget_s", type=float, default=None, help="total seconds (default 480; smoke 300)")
    parser.add_argument("--train_reserve_s", type=float, default=None,
                        help="seconds kept for the training run (default 200; smoke 120)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 50; smoke 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2; smoke 1)")
    parser.add_argument("--train_steps", type=int, default=None, help="training run steps (default 3000; smoke 4)")
    parser.add_argument("--out", default=None, help="also write the JSON here (rewritten after every step)")
    parser.add_argument("--model_dir", default=None, help="keep the training run here (default: a deleted temp dir)")
    parser.add_argument("--report_dir", default=None, help="write the training run's report here (report.html)")
    args = parser.parse_args(argv)
    defaults = dict(budget_s=(300.0, 480.0), train_reserve_s=(120.0, 200.0), steps=(2, 50), warmup=(1, 2),
                    train_steps=(4, 3000))
    for name, (smoke, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    for name in ("budget_s", "steps", "train_steps"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0; got {getattr(args, name)}.")
    if args.warmup < 0 or args.train_reserve_s < 0:
        parser.error("--warmup and --train_reserve_s must be >= 0.")
    return args


def run_child(command, timeout):
    """(returncode or "timeout", stdout, stderr, seconds) of a child process from the repository root."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(common.REPO_ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=common.REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=max(timeout, 1))
        return done.returncode, done.stdout, done.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as expired:
        return "timeout", _text(expired.stdout), _text(expired.stderr), time.perf_counter() - start


def _text(output):
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else ""


def measure(config, args, timeout):
    """One throughput row: ``bench.train_step`` for ``config`` (input included)."""
    precision, jit, on_device, per_execution = config
    command = [sys.executable, "-m", "bench.train_step", "--experiment", EXPERIMENT, "--algorithm", "daso",
               "--precision", precision, "--jit_compile", str(jit), "--augment_on_device", str(on_device),
               "--steps_per_execution", str(per_execution), "--input", "pipeline", "--input_batches", "0",
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.smoke:
        command += ["--depth", "10", "--width", "1", "--batch", "4", "--ratio", "2", "--data", "random"]
    else:
        command += ["--depth", "28", "--width", "2", "--batch", "64", "--ratio", "2", "--data", "cifar10_jpeg"]
    code, stdout, stderr, seconds = run_child(command, timeout)
    row = dict(zip(GRID_KEYS, (precision, bool(jit), bool(on_device), per_execution)), wall_s=round(seconds, 1))
    if code != 0:
        row["error"] = "timed out (budget)" if code == "timeout" else f"exit {code}: {_last_line(stderr)}"
        return row, None
    report = json.loads(stdout[stdout.index("{"):])
    timing = report["input_included"]
    row.update({key: timing[key] for key in KEPT})
    row["peak_device_memory_mib"] = report["peak_device_memory_mib"]
    row["images_per_step"] = report["images_per_step"]
    return row, report


def training_plan(args, fastest, time_left):
    """(steps, why) of the training run: ``--train_steps``, or fewer if they would not fit."""
    steps = args.train_steps
    if args.smoke or fastest is None:
        return steps, "as asked"
    affordable = (time_left - TRAINING_OVERHEAD_S) * fastest["steps_per_second"]
    if affordable >= steps:
        return steps, "as asked"
    steps = max(EVAL_INTERVAL, int(affordable // EVAL_INTERVAL) * EVAL_INTERVAL)
    return steps, (f"reduced from {args.train_steps}: {fastest['steps_per_second']:.2f} steps/s measured, "
                   f"{time_left:.0f} s left")


def train(args, fastest, time_left, model_dir):
    """The short real training run through run.py; its results as a dict."""
    steps, why = training_plan(args, fastest, time_left)
    settings = fastest or dict(zip(GRID_KEYS, ("float32", False, False, 1)))
    if args.smoke:
        folder = common.cifar10_folder(per_class=SMOKE_PER_CLASS)
        overrides = f"{SMOKE_OVERRIDES},algorithm.warmup_steps={max(steps // 2, 1)}"
    else:
        folder = common.cifar10_folder()
        overrides = (f"trainer.eval_interval={EVAL_INTERVAL},trainer.checkpoint_interval={EVAL_INTERVAL},"
                     f"algorithm.warmup_steps={steps // 2}")
    per_execution = settings["steps_per_execution"]
    precision = "none" if settings["precision"] == "float32" else settings["precision"]
    overrides += (f",data.source=folder,data.data_dir={folder},trainer.train_steps={steps},"
                  f"runtime.mixed_precision={precision},runtime.jit_compile={str(settings['jit_compile']).lower()},"
                  f"runtime.augment_on_device={str(settings['augment_on_device']).lower()},"
                  f"runtime.steps_per_execution={per_execution}")
    if per_execution > 1:  # intervals must be multiples of it
        overrides += f",trainer.log_interval={per_execution * math.ceil(50 / per_execution)}"
    command = [sys.executable, str(common.REPO_ROOT / "run.py"), f"--experiment={EXPERIMENT}",
               f"--model_dir={model_dir}", f"--params_override={overrides}"]
    code, stdout, stderr, seconds = run_child(command, time_left)
    result = {"experiment": EXPERIMENT, "train_steps": steps, "train_steps_why": why,
              "settings": {key: settings[key] for key in GRID_KEYS}, "data_dir": str(folder),
              "wall_s": round(seconds, 1)}
    if code != 0:
        result["error"] = "timed out (budget)" if code == "timeout" else f"exit {code}: {_last_line(stderr)}"
    from daso_tf.training.results import read_results

    results = read_results(model_dir) or {}
    final = (results.get("final") or {}).get("test") or {}
    result.update({
        "steps_done": results.get("step"),
        "finished": results.get("finished", False),
        "test_top1": final.get("top1"),
        "test_top1_la": final.get("top1_la"),
        "test_head_medium_tail": [final.get(group) for group in ("head", "medium", "tail")],
        "test_top1_median": results.get("test_top1_median20"),
        "evaluations": len(results.get("history") or []),
        "run_wall_time_s": results.get("wall_time_s"),
    })
    if code != 0 and not results:
        result["stdout_tail"] = stdout.strip().splitlines()[-5:]
    return result


def run(args):
    start = time.perf_counter()
    deadline = start + args.budget_s
    grid_deadline = deadline - args.train_reserve_s
    result = {"benchmark": "gpu_check", "smoke": args.smoke, "budget_s": args.budget_s,
              "model": "WRN-10-1, B=4, mu=2" if args.smoke else "WRN-28-2, B=64, mu=2", "learner": "daso",
              "experiment": EXPERIMENT, "timed_steps": args.steps, "warmup_calls": args.warmup,
              "load_average_start": common.load_average(), "device": None, "device_type": None,
              "tensorflow": None, "keras": None,
              "throughput": [], "skipped": [], "peak_device_memory_mib": None, "training": None}

    def save():
        result["elapsed_s"] = round(time.perf_counter() - start, 1)
        if args.out:
            from daso_tf.training.results import write_json_atomic

            write_json_atomic(args.out, result)

    configurations = grid(args.smoke)
    for index, config in enumerate(configurations):
        time_left = grid_deadline - time.perf_counter()
        if time_left < 10:
            result["skipped"] = [dict(zip(GRID_KEYS, c), reason="time budget") for c in configurations[index:]]
            break
        row, report = measure(config, args, time_left)
        result["throughput"].append(row)
        if report is not None and result["device"] is None:
            result.update(device=report["device"], device_type=report["device_type"],
                          tensorflow=report["tensorflow"], keras=report["keras"])
        save()
    memories = [row["peak_device_memory_mib"] for row in result["throughput"] if row.get("peak_device_memory_mib")]
    result["peak_device_memory_mib"] = max(memories) if memories else None
    measured = [row for row in result["throughput"] if "steps_per_second" in row]
    fastest = max(measured, key=lambda row: row["steps_per_second"]) if measured else None
    result["fastest"] = None if fastest is None else {key: fastest[key] for key in GRID_KEYS + KEPT}

    time_left = deadline - time.perf_counter()
    if time_left < 10:
        result["training"] = {"skipped": "time budget"}
    else:
        model_dir = args.model_dir or tempfile.mkdtemp(prefix="gpu_check_run_")
        try:
            result["training"] = train(args, fastest, time_left, model_dir)
            if args.report_dir and os.path.isdir(model_dir):
                from daso_tf.tools.report import write_report

                result["training"]["report"] = write_report([model_dir], args.report_dir)
        finally:
            if args.model_dir is None:
                shutil.rmtree(model_dir, ignore_errors=True)
    result["load_average_end"] = common.load_average()
    save()
    return result


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
