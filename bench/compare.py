"""A/B timing of two checkouts: ``bench.train_step`` alternated between them, medians and ratios.

    git worktree add /tmp/base <commit>
    python -m bench.compare --base /tmp/base --configs b4,b32 --rounds 5 --out ab.jsonl

Every run is a fresh process that imports ``daso_tf`` from its checkout (``--base`` or
``--new``, default this one) and runs THIS checkout's ``bench.train_step`` on it, so both
sides are timed by the same code even when the base's own bench lacks a flag. Rounds
alternate the order (base, new / new, base / ...), one process at a time, so a slow drift of
the machine's load falls on both sides. Each run appends one JSON line to ``--out`` (side,
config, round, the 1-minute load average, bench's JSON); at the end one JSON object per
config is printed: each side's per-run medians (s/step), their median, the traced train
step's op count, and ``new_over_base`` (the ratio of the medians; 0.75 = 25% less time).

Configs (DASO active, input pipeline included, XLA off, one step per execution):
  b4          WRN-28-1, B=4, mu=2, 40 timed steps: the overhead-bound step
  b32         WRN-28-1, B=32, mu=2, 10 timed steps
  paper_f32   WRN-28-2, B=64, mu=2 (the paper's step), float32, 4 timed steps
  paper_bf16  the same in mixed_bfloat16

A base older than the packaged experiment registry (``experiments/registry.py`` at its top
level instead of ``daso_tf/experiments/registry.py``) is handled by aliasing that module.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from bench import common

CONFIGS = {
    "b4": ["--depth", "28", "--width", "1", "--batch", "4", "--steps", "40", "--warmup", "3"],
    "b32": ["--depth", "28", "--width", "1", "--batch", "32", "--steps", "10", "--warmup", "2"],
    "paper_f32": ["--depth", "28", "--width", "2", "--batch", "64", "--steps", "4", "--warmup", "2",
                  "--precision", "float32"],
    "paper_bf16": ["--depth", "28", "--width", "2", "--batch", "64", "--steps", "4", "--warmup", "2",
                   "--precision", "mixed_bfloat16"],
}
COMMON_ARGS = ["--ratio", "2", "--input", "pipeline", "--input_batches", "0"]

# Runs in the child: the checkout's daso_tf, this checkout's bench (a directory holding only
# a link to it comes first on sys.path, so a `bench` package in the checkout is not used).
CHILD_SETUP = """
import runpy, sys
bench_dir, tree = sys.argv[1], sys.argv[2]
sys.path[:0] = [bench_dir, tree]
import daso_tf
try:
    import daso_tf.experiments.registry
except ImportError:
    import experiments.registry as registry
    package = type(sys)("daso_tf.experiments")
    package.__path__, package.registry = [], registry
    sys.modules["daso_tf.experiments"] = package
    sys.modules["daso_tf.experiments.registry"] = registry
"""
_CHILD = CHILD_SETUP + """
sys.argv = ["bench.train_step"] + sys.argv[3:]
runpy.run_module("bench.train_step", run_name="__main__")
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="checkout of the base commit (its daso_tf is timed)")
    parser.add_argument("--new", default=str(common.REPO_ROOT), help="checkout of the new side (default: this one)")
    parser.add_argument("--configs", default="b4,b32", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side and config")
    parser.add_argument("--out", default=None, help="append one JSON line per run here")
    parser.add_argument("--extra", default="", help="more bench.train_step flags for every run, e.g. '--data random'")
    parser.add_argument("--timeout_s", type=int, default=1800, help="per run")
    args = parser.parse_args(argv)
    args.configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in args.configs if name not in CONFIGS]
    if unknown or not args.configs:
        parser.error(f"--configs: unknown {unknown or args.configs}; choose from {', '.join(CONFIGS)}.")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1; got {args.rounds}.")
    for flag in ("base", "new"):
        tree = pathlib.Path(getattr(args, flag)).resolve()
        if not (tree / "daso_tf" / "__init__.py").is_file():
            parser.error(f"--{flag}={getattr(args, flag)}: no daso_tf package there.")
        setattr(args, flag, str(tree))
    return args


def run_order(rounds):
    """Sides per round: (base, new), then (new, base), alternating."""
    return [("base", "new") if index % 2 == 0 else ("new", "base") for index in range(rounds)]


def run_once(tree, config, extra, bench_dir, timeout_s):
    """One fresh process; bench.train_step's JSON (or {"error": ...})."""
    command = [sys.executable, "-c", _CHILD, bench_dir, tree, *CONFIGS[config], *COMMON_ARGS, *extra]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    try:
        completed = subprocess.run(command, cwd=bench_dir, env=env, capture_output=True, text=True,
                                   timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    text = completed.stdout
    if completed.returncode != 0 or "{" not in text:
        return {"error": f"exit {completed.returncode}", "stderr": completed.stderr[-2000:]}
    return json.loads(text[text.index("{"):])


def summarize(records):
    """Per config: each side's per-run medians, their median, op count; new/base ratio."""
    summary = {}
    for record in records:
        if "error" in record["result"]:
            continue
        entry = summary.setdefault(record["config"], {})
        side = entry.setdefault(record["side"], {"seconds_per_step": [], "load_average": []})
        side["seconds_per_step"].append(record["result"]["input_included"]["seconds_per_step_median"])
        side["load_average"].append(record["load_average"])
        side["train_step_ops"] = record["result"]["graph"]["train_step_ops"]
    for entry in summary.values():
        for side in entry.values():
            side["median"] = statistics.median(side["seconds_per_step"])
        if "base" in entry and "new" in entry:
            entry["new_over_base"] = round(entry["new"]["median"] / entry["base"]["median"], 3)
    return summary


def main(argv=None):
    args = parse_args(argv)
    extra = args.extra.split()
    trees = {"base": args.base, "new": args.new}
    records = []
    with tempfile.TemporaryDirectory() as bench_dir:
        os.symlink(common.REPO_ROOT / "bench", pathlib.Path(bench_dir) / "bench")
        for config in args.configs:
            for round_index, order in enumerate(run_order(args.rounds)):
                for side in order:
                    record = {"side": side, "config": config, "round": round_index,
                              "load_average": common.load_average()[0], "tree": trees[side]}
                    record["result"] = run_once(trees[side], config, extra, bench_dir, args.timeout_s)
                    records.append(record)
                    if args.out:
                        with open(args.out, "a") as stream:
                            stream.write(json.dumps(record) + "\n")
                    status = record["result"].get("error") or \
                        f"{record['result']['input_included']['seconds_per_step_median']:.4f} s/step"
                    print(f"{config} round {round_index} {side}: {status}", file=sys.stderr, flush=True)
    summary = summarize(records)
    print(json.dumps(summary, indent=1))
    errors = [record for record in records if "error" in record["result"]]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
