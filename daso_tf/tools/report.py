"""One-page report of one or several training runs: ``report.html`` plus PNG figures.

    python -m daso_tf.tools.report RUN_DIR [RUN_DIR ...] --out DIR [--labels A,B,...]
    python run.py --experiment=NAME --mode=report [--model_dir=DIR] [--report_dir=OUT]

It reads what a run records in its directory (``results.json``, ``params.yaml``,
``checkpoints/``); it needs neither the dataset nor TensorFlow, and works on a run that is
still going (whatever has been recorded so far) as on a finished one. Several runs are
overlaid (curves) or side by side (bars), one colour per run. ``DIR/report.html`` embeds
every figure (one file to send around); the figures are also written beside it:

- ``accuracy.png``: test top-1 (solid) and test-time logit-adjusted top-1 (dashed), and
  validation top-1, over training steps (EMA model);
- ``per_class_accuracy.png``: final per-class test accuracy, classes ordered head -> tail
  by their labeled count (in the tick labels);
- ``pseudo_label_quality.png``: per-class precision and recall of the pseudo-labels of all
  unlabeled samples, summed over the last tenth of the recorded steps, and the
  head / medium / tail means over training (the DASO paper's Fig. 1/2 view: a learner biased
  towards the head has high head recall but low head precision, and the reverse on the tail);
- ``pseudo_label_distribution.png``: the share of each class among the selected
  pseudo-labels (same last window) against the true unlabeled class distribution;
- ``mask_rate.png``: the fraction of unlabeled samples passing the mask over training, with
  the end of DASO's warm-up marked;
- ``losses.png``: loss_x, loss_u, loss_align (and USADTM's loss_uc) over training;

and a table of each run's setting, hyper-parameters, code versions (when recorded), median-20
test top-1, head/medium/tail accuracy, wall time and progress. Pseudo-label precision/recall
need the unlabeled ground truth (CIFAR; not STL-10). A directory that is not a run is refused
with one line (exit status 2). For a run recorded before ``results.json`` held a training
history, the losses and mask rate come from its TensorBoard event files instead.
"""

import argparse
import base64
import dataclasses
import html
import io
import math
import os
import sys

import numpy as np

PROG = "python -m daso_tf.tools.report"
REPORT_FILE = "report.html"
# Pseudo-label bars aggregate the training windows of the last FINAL_FRACTION of the steps.
FINAL_FRACTION = 0.1
GROUPS = ("head", "medium", "tail")
GROUP_STYLES = {"head": "-", "medium": "--", "tail": ":"}
LOSSES = ("loss_x", "loss_u", "loss_align", "loss_uc")


class ReportError(ValueError):
    """Bad input to the report (not a run directory, wrong number of labels); one line."""


@dataclasses.dataclass
class Run:
    """What one run directory has recorded so far."""

    directory: str
    config: dict  # the run's resolved config (results.json, else params.yaml)
    results: dict  # results.json ({} before the first evaluation or checkpoint)
    checkpoint_step: object  # latest complete checkpoint, or None
    label: str = ""
    logged_training: list = dataclasses.field(default_factory=list)  # TensorBoard fallback

    def section(self, name):
        return self.config.get(name) or {}

    @property
    def algorithm(self):
        return self.section("algorithm").get("name") or "?"

    def hyperparameter(self, key):
        """The learner's value of ``key``: as recorded by the learner, else the config's."""
        learner = (self.results.get("learner") or {}).get("config") or {}
        value = learner.get(key)
        return self.section("algorithm").get(key) if value is None else value

    @property
    def evaluations(self):
        return [e for e in self.results.get("history") or [] if isinstance(e, dict)]

    @property
    def training(self):
        if "training" not in self.results:  # recorded before results.json held it
            return self.logged_training
        return [e for e in self.results.get("training") or [] if isinstance(e, dict)]

    @property
    def labeled_counts(self):
        return self.results.get("labeled_counts")

    @property
    def unlabeled_counts(self):
        return self.results.get("unlabeled_counts")

    @property
    def class_names(self):
        names = (self.results.get("per_class_accuracy") or {}).get("class_names")
        counts = self.labeled_counts
        if names is None and counts is not None:
            names = [str(k) for k in range(len(counts))]
        return names

    @property
    def step(self):
        steps = [s for s in (self.results.get("step"), self.checkpoint_step) if s is not None]
        return max(steps) if steps else 0

    @property
    def train_steps(self):
        return self.results.get("train_steps") or self.section("trainer").get("train_steps")

    @property
    def median_window(self):
        return self.section("trainer").get("median_window") or 20


# ----------------------------------------------------------------------------- loading


def load_run(directory):
    """The ``Run`` recorded in ``directory``; ReportError when it is not a run directory."""
    import yaml

    from daso_tf.training.checkpoints import CheckpointManager
    from daso_tf.training.results import RESULTS_FILE, read_results

    if not os.path.isdir(directory):
        raise ReportError(f"{directory}: {'not a directory' if os.path.exists(directory) else 'no such directory'}")
    results = read_results(directory)
    params_file = os.path.join(directory, "params.yaml")
    config = (results or {}).get("config")
    if config is None and os.path.isfile(params_file):
        try:
            with open(params_file) as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as error:
            raise ReportError(f"{params_file}: unreadable ({' '.join(str(error).split())})") from None
    if not isinstance(config, dict):
        if os.path.exists(os.path.join(directory, RESULTS_FILE)):
            raise ReportError(f"{directory}: {RESULTS_FILE} is unreadable and there is no params.yaml")
        raise ReportError(f"{directory} is not a run directory (no {RESULTS_FILE} or params.yaml; "
                          "expected the --model_dir of a run.py run)")
    checkpoint_step = CheckpointManager(None, os.path.join(directory, "checkpoints")).latest_step
    run = Run(directory=directory, config=config, results=results or {}, checkpoint_step=checkpoint_step)
    if "training" not in run.results:
        run.logged_training = training_from_tensorboard(os.path.join(directory, "tensorboard"))
    return run


# TensorBoard tags of the logged training windows -> training entry keys.
_LOGGED = {f"train/{key}": key for key in ("loss", "loss_x", "loss_u", "loss_align", "loss_uc", "mask", "learning_rate")}


def training_from_tensorboard(directory):
    """Training entries (losses, mask, learning rate; no pseudo-label counts) from the
    ``log_interval`` window means in the TensorBoard event files: the fallback for a run
    recorded before results.json held a training history. Reads the files directly (no
    TensorFlow); a step logged twice (a resumed run) keeps its last value."""
    import glob
    import struct

    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    entries = {}
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset + 12 <= len(data):  # TFRecord: length, its CRC, payload, payload CRC
            (length,) = struct.unpack_from("<Q", data, offset)
            payload = data[offset + 12:offset + 12 + length]
            offset += 16 + length
            if len(payload) < length:
                break  # being written
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                key = _LOGGED.get(value.tag)
                if key is None:
                    continue
                number = (value.simple_value if value.HasField("simple_value")
                          else tensor_util.make_ndarray(value.tensor).item())
                entries.setdefault(event.step, {"step": int(event.step)})[key] = float(number)
    return [entries[step] for step in sorted(entries)]


def assign_labels(runs, labels=None):
    """Legend labels: ``labels`` if given, else learner + experiment + seed (+ directory if ambiguous)."""
    if labels is not None:
        if len(labels) != len(runs):
            raise ReportError(f"--labels has {len(labels)} label(s) for {len(runs)} run director"
                              f"{'y' if len(runs) == 1 else 'ies'}; give one per run, comma-separated")
        for run, label in zip(runs, labels):
            run.label = label
        return runs
    for run in runs:
        seed = run.section("data").get("seed")
        run.label = f"{run.algorithm} {run.config.get('name') or '?'} seed {seed}"
    taken = [run.label for run in runs]
    for run in runs:
        if taken.count(run.label) > 1:
            run.label += f" ({os.path.basename(os.path.normpath(run.directory))})"
    return runs


# ----------------------------------------------------------------------------- per-class data


def class_order(counts):
    """Class ids from head to tail (by labeled count) and the (head, medium, tail) groups."""
    from daso_tf.training.evaluation import class_groups

    groups = class_groups(counts)
    return np.concatenate(groups), dict(zip(GROUPS, groups))


def final_window(entries):
    """The training entries covering the last ``FINAL_FRACTION`` of the recorded steps (>= 1)."""
    entries = [e for e in entries if e.get("pseudo_labels")]
    if not entries:
        return []
    last = entries[-1]["step"]
    start = min(last - max(int(last * FINAL_FRACTION), 1), entries[-1].get("start_step", last - 1))
    return [e for e in entries if e["step"] > start]


# Per-class counts of a training entry: (correct, by pseudo-label, by true class), for the
# pseudo-labels that passed the mask ("selected") and for all of them ("all").
COUNT_KEYS = {"selected": ("correct", "selected", "selected_by_true_class"),
              "all": ("correct_all", "predicted_all", "by_true_class_all")}


def pseudo_label_counts(entries, num_classes):
    """Summed per-class counts of ``entries`` (every key of ``COUNT_KEYS``; zeros when absent)."""
    keys = [key for group in COUNT_KEYS.values() for key in group]
    totals = {key: np.zeros(num_classes) for key in keys}
    for entry in entries:
        counts = entry["pseudo_labels"]
        for key in totals:
            if len(counts.get(key) or ()) == num_classes:
                totals[key] += np.asarray(counts[key], dtype="float64")
    return totals


def counts_over(run):
    """"all" when the run recorded every sample's pseudo-label (the paper's Fig. 1 view), else
    "selected" (runs recorded before that)."""
    return "all" if any((e.get("pseudo_labels") or {}).get("by_true_class_all") for e in run.training) else "selected"


def pseudo_label_rates(entries, num_classes, over="selected"):
    """Per-class (precision, recall) in % of the pseudo-labels of ``entries``: the selected
    ones (``over="selected"``) or all of them (``over="all"``)."""
    from daso_tf.training.evaluation import precision_recall

    totals = pseudo_label_counts(entries, num_classes)
    correct, predicted, by_true_class = (totals[key] for key in COUNT_KEYS[over])
    precision, recall = precision_recall(correct, predicted, by_true_class)
    return 100.0 * precision, 100.0 * recall


def selected_correct_rate(entries, num_classes):
    """Per class, % of its unlabeled samples that were selected WITH the right pseudo-label
    (what actually trains the class; needs the all-sample counts)."""
    totals = pseudo_label_counts(entries, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * totals["correct"] / np.where(totals["by_true_class_all"] > 0, totals["by_true_class_all"], np.nan)


def has_ground_truth(run):
    """Whether the run's pseudo-label counts include samples with a known true class."""
    return any(sum(e["pseudo_labels"].get("selected_by_true_class") or ()) > 0
               for e in run.training if e.get("pseudo_labels"))


def _nanmean(values):
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def _values(items, getter):
    """``(steps, values)`` with None turned into NaN (gaps in the curves)."""
    steps, values = [], []
    for item in items:
        value = getter(item)
        steps.append(item["step"])
        values.append(float("nan") if value is None else float(value))
    return steps, values


# ----------------------------------------------------------------------------- figures


def _new_figure(rows=1, columns=1, width=None, height=None):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width or 6.0 * columns, height or 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes.ravel()


def _bars_width(num_classes, num_runs):
    """Inches for one panel of per-class bars: wider with more bars, within a screen's reach."""
    return min(max(8.0, 0.3 * num_classes * num_runs), 24.0)


def _colour(index):
    from matplotlib import colormaps

    return colormaps["tab10"](index % 10)


def _legend(axis, **kwargs):
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small", **kwargs)


def _reference_classes(runs):
    """(class names, labeled counts) of the first run that recorded them, and the runs that share them."""
    for run in runs:
        if run.labeled_counts and run.class_names:
            size = len(run.labeled_counts)
            return run.class_names, run.labeled_counts, [r for r in runs if len(r.labeled_counts or ()) == size]
    return None, None, []


def _class_ticks(axis, names, counts, order):
    axis.set_xticks(range(len(order)))
    many = len(order) > 12
    axis.set_xticklabels([f"{names[k]} ({int(counts[k])})" for k in order], rotation=90 if many else 30,
                         ha="center" if many else "right", fontsize="x-small" if many else "small")
    axis.set_xlabel("class (labeled images), head -> tail")


def _step_axis(axis):
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("training step")
    axis.grid(alpha=0.3)


def _group_separators(axis, groups):
    for boundary in (len(groups["head"]) - 0.5, len(groups["head"]) + len(groups["medium"]) - 0.5):
        axis.axvline(boundary, color="0.6", linestyle="--", linewidth=0.8)


def _grouped_bars(axis, series, order):
    """Bars of several runs side by side per class: ``series`` = [(run index, label, values)]."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(order))
    for slot, (index, label, values) in enumerate(series):
        values = np.asarray(values, dtype="float64")[order]
        axis.bar(positions - 0.4 + width * (slot + 0.5), np.nan_to_num(values), width, label=label,
                 color=_colour(index))


def plot_accuracy(runs):
    if not any(run.evaluations for run in runs):
        return None
    figure, (test_axis, valid_axis) = _new_figure(1, 2)
    for index, run in enumerate(runs):
        colour = _colour(index)
        evaluations = run.evaluations
        steps, top1 = _values(evaluations, lambda e: (e.get("test") or {}).get("top1"))
        test_axis.plot(steps, top1, color=colour, marker="." if len(steps) < 30 else None, label=run.label)
        steps, top1_la = _values(evaluations, lambda e: (e.get("test") or {}).get("top1_la"))
        test_axis.plot(steps, top1_la, color=colour, linestyle="--", label=f"{run.label} (LA)")
        steps, valid = _values(evaluations, lambda e: (e.get("valid") or {}).get("top1"))
        valid_axis.plot(steps, valid, color=colour, marker="." if len(steps) < 30 else None, label=run.label)
    test_axis.set_title("test top-1 (%): solid = plain, dashed = test-time logit adjustment", fontsize="medium")
    valid_axis.set_title("validation top-1 (%)", fontsize="medium")
    for axis in (test_axis, valid_axis):
        _step_axis(axis)
        _legend(axis)
    return figure


def plot_per_class_accuracy(runs):
    names, counts, runs = _reference_classes(runs)
    series = [(index, run.label, [np.nan if v is None else v for v in
                                  (run.results.get("per_class_accuracy") or {}).get("test") or []])
              for index, run in enumerate(runs)]
    series = [s for s in series if len(s[2]) == len(counts or ())]
    if not series:
        return None
    order, groups = class_order(counts)
    figure, (axis,) = _new_figure(1, 1, width=_bars_width(len(order), len(series)))
    _grouped_bars(axis, series, order)
    _class_ticks(axis, names, counts, order)
    _group_separators(axis, groups)
    axis.set_ylabel("test accuracy (%)")
    axis.set_ylim(0, 100)
    axis.set_title("final per-class test accuracy (latest evaluation); dashed lines: head | medium | tail",
                   fontsize="medium")
    _legend(axis)
    return figure


def plot_pseudo_label_quality(runs):
    names, counts, runs = _reference_classes(runs)
    runs = [(index, run) for index, run in enumerate(runs) if has_ground_truth(run)]
    if not runs:
        return None
    order, groups = class_order(counts)
    num_classes = len(counts)
    figure, axes = _new_figure(2, 2, width=2 * _bars_width(num_classes, len(runs)), height=8.0)
    for column, what in enumerate(("precision", "recall")):
        series = []
        for index, run in runs:
            rates = pseudo_label_rates(final_window(run.training), num_classes, counts_over(run))[column]
            series.append((index, run.label, rates))
        _grouped_bars(axes[column], series, order)
        _class_ticks(axes[column], names, counts, order)
        _group_separators(axes[column], groups)
        axes[column].set_ylim(0, 100)
        axes[column].set_ylabel(f"{what} (%)")
        axes[column].set_title(f"pseudo-label {what} per class, last {FINAL_FRACTION:.0%} of the steps",
                               fontsize="medium")
        curve_axis = axes[2 + column]
        for index, run in runs:
            entries = [e for e in run.training if e.get("pseudo_labels")]
            per_entry = [pseudo_label_rates([e], num_classes, counts_over(run))[column] for e in entries]
            for group in GROUPS:
                values = [_nanmean(rates[groups[group]]) for rates in per_entry]
                curve_axis.plot([e["step"] for e in entries], values, color=_colour(index),
                                linestyle=GROUP_STYLES[group], label=f"{run.label}: {group}")
        curve_axis.set_ylim(0, 100)
        _step_axis(curve_axis)
        curve_axis.set_ylabel(f"mean {what} (%)")
        curve_axis.set_title(f"{what} over training: head (solid), medium (dashed), tail (dotted)",
                             fontsize="medium")
    _legend(axes[0])
    _legend(axes[3], ncol=max(1, len(runs) // 3))
    return figure


def plot_pseudo_label_distribution(runs):
    names, counts, runs = _reference_classes(runs)
    runs = [(index, run) for index, run in enumerate(runs) if has_ground_truth(run)]
    if not runs:
        return None
    order, groups = class_order(counts)
    num_classes = len(counts)
    figure, (axis,) = _new_figure(1, 1, width=_bars_width(num_classes, len(runs)))
    series = []
    for index, run in runs:
        selected = pseudo_label_counts(final_window(run.training), num_classes)["selected"]
        series.append((index, f"{run.label}: selected pseudo-labels", 100.0 * selected / max(selected.sum(), 1)))
    _grouped_bars(axis, series, order)
    truths = {}
    for index, run in runs:
        if run.unlabeled_counts and len(run.unlabeled_counts) == num_classes:
            truths.setdefault(tuple(run.unlabeled_counts), []).append((index, run.label))
    for truth, owners in truths.items():
        share = 100.0 * np.asarray(truth, dtype="float64")[order] / max(sum(truth), 1)
        colour = "black" if len(truths) == 1 else _colour(owners[0][0])
        label = "true unlabeled distribution" + ("" if len(truths) == 1 else
                                                 f" ({', '.join(owner for _, owner in owners)})")
        axis.plot(range(num_classes), share, color=colour, marker="D", markeredgecolor="black",
                  linestyle=":", label=label)
    _class_ticks(axis, names, counts, order)
    _group_separators(axis, groups)
    axis.set_ylabel("share of selected pseudo-labels (%)")
    axis.set_title(f"class distribution of the selected pseudo-labels (last {FINAL_FRACTION:.0%} of the steps) "
                   "vs the unlabeled set", fontsize="medium")
    _legend(axis)
    return figure


def _mask_rate(entry):
    if "pseudo_labels" not in entry:  # a TensorBoard window (older run): the logged mean
        return entry.get("mask")
    counts = entry["pseudo_labels"]  # None: the learner has no confidence mask
    return counts["mask_rate"] if counts else None


def plot_mask_rate(runs):
    runs = [(index, run) for index, run in enumerate(runs)
            if any(_mask_rate(entry) is not None for entry in run.training)]
    if not runs:
        return None
    figure, (axis,) = _new_figure(1, 1, width=9.0)
    for index, run in runs:
        steps, rates = _values(run.training, _mask_rate)
        axis.plot(steps, 100.0 * np.asarray(rates), color=_colour(index),
                  marker="." if len(steps) < 30 else None, label=run.label)
        warmup = run.hyperparameter("warmup_steps")
        if "daso" in run.algorithm and warmup:
            axis.axvline(warmup, color=_colour(index), linestyle=":", linewidth=1.2,
                         label=f"{run.label}: end of DASO warm-up ({warmup})")
    axis.set_ylim(0, 100)
    _step_axis(axis)
    axis.set_ylabel("unlabeled samples passing the mask (%)")
    axis.set_title("mask rate (mean over each recorded window)", fontsize="medium")
    _legend(axis)
    return figure


def plot_losses(runs):
    keys = [key for key in LOSSES if any(key in e for run in runs for e in run.training)]
    if not keys:
        return None
    figure, axes = _new_figure(1, len(keys), width=max(9.0, 4.5 * len(keys)))
    for axis, key in zip(axes, keys):
        for index, run in enumerate(runs):
            steps, values = _values([e for e in run.training if key in e], lambda e: e[key])
            axis.plot(steps, values, color=_colour(index), marker="." if len(steps) < 30 else None, label=run.label)
        axis.set_title(f"{key} (mean over each recorded window)", fontsize="medium")
        _step_axis(axis)
    _legend(axes[0])
    return figure


# (file stem, heading, plot function, what is missing when the figure cannot be drawn)
FIGURES = (
    ("accuracy", "Top-1 over training", plot_accuracy, "no evaluation recorded yet"),
    ("per_class_accuracy", "Per-class test accuracy", plot_per_class_accuracy,
     "no per-class evaluation with labeled class counts recorded yet"),
    ("pseudo_label_quality", "Pseudo-label precision and recall", plot_pseudo_label_quality,
     "no pseudo-label counts with known unlabeled classes recorded (learner without a confidence mask, "
     "unlabeled ground truth unknown, e.g. STL-10, or no training window recorded yet)"),
    ("pseudo_label_distribution", "Pseudo-label class distribution", plot_pseudo_label_distribution,
     "no pseudo-label counts with known unlabeled classes recorded"),
    ("mask_rate", "Mask rate", plot_mask_rate,
     "no training window of a learner with a confidence mask recorded yet"),
    ("losses", "Training losses", plot_losses, "no training window recorded yet"),
)


def figure_png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- table


def _number(value, digits=2):
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def _hours(seconds):
    return "n/a" if seconds is None else f"{float(seconds) / 3600:.2f} h"


def _setting(run):
    data = run.section("data")
    unlabeled = "reversed" if data.get("reverse_unlabeled") else f"gamma_u={_compact(data.get('imbalance_unlabeled'))}"
    return (f"{data.get('dataset', '?')} ({data.get('source', '?')}): N1={data.get('num_labeled_head')} "
            f"M1={data.get('num_unlabeled_head')} gamma_l={_compact(data.get('imbalance_labeled'))} {unlabeled}")


def _compact(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _hyperparameters(run):
    keys = [("threshold", "threshold"), ("lambda_u", "lambda_u")]
    if "daso" in run.algorithm:
        keys += [("warmup_steps", "warm-up"), ("dist_temperature", "T_dist"), ("proto_temperature", "T_proto"),
                 ("queue_size", "L")]
    keys += [("logit_adjust", "LA"), ("ema_decay", "EMA"), ("learning_rate", "lr")]
    parts = []
    for key, name in keys:
        value = run.hyperparameter(key)
        parts.append(f"{name} {'default' if value is None else _compact(value)}")
    return ", ".join(parts)


def _code(run):
    provenance = run.results.get("provenance") or run.config.get("provenance")
    if not isinstance(provenance, dict):
        return "not recorded"
    parts = []
    for key, value in provenance.items():
        if value is None:
            continue
        if key == "git_commit":
            value = str(value)[:12] + ("+changes" if provenance.get("git_dirty") else "")
        elif key == "git_dirty":
            continue
        parts.append(f"{key} {value}")
    return ", ".join(parts) or "not recorded"


def _progress(run):
    done, total = run.step, run.train_steps
    status = "finished" if run.results.get("finished") else "not finished (running or stopped)"
    checkpoint = "none" if run.checkpoint_step is None else run.checkpoint_step
    return f"{done} / {total}: {status}; latest checkpoint {checkpoint}"


def _median(run, metric):
    window = run.median_window
    return f"{_number(run.results.get(f'{metric}_median{window}'))} (median-{window})"


def _group_rates(run, what):
    """Head / medium / tail means over the last window: pseudo-label recall (all samples when
    recorded) or the selected-with-the-right-label rate; "n/a" without unlabeled ground truth."""
    counts = run.labeled_counts
    entries = final_window(run.training)
    if not counts or not has_ground_truth(run) or not entries:
        return "n/a"
    num_classes = len(counts)
    if what == "recall":
        rates = pseudo_label_rates(entries, num_classes, counts_over(run))[1]
    elif counts_over(run) == "all":
        rates = selected_correct_rate(entries, num_classes)
    else:
        return "n/a"
    _, groups = class_order(counts)
    return " / ".join(_number(_nanmean(rates[groups[group]])) for group in GROUPS)


def summary_rows(runs):
    """[(field, [value per run])] of the report's table (strings)."""

    def final_test(run, key):
        final = run.results.get("final") or {}
        return _number((final.get("test") or {}).get(key))

    model = lambda run: (f"WRN-{run.section('model').get('depth')}-{run.section('model').get('width')} "
                         f"({run.section('model').get('dtype_policy', 'float32')})")
    batch = lambda run: (f"B={run.section('data').get('labeled_batch_size')}, "
                         f"mu={run.section('data').get('unlabeled_ratio')}")
    fields = [
        ("directory", lambda run: run.directory),
        ("experiment", lambda run: run.config.get("name") or "?"),
        ("learner", lambda run: run.algorithm),
        ("data", _setting),
        ("seed", lambda run: str(run.section("data").get("seed"))),
        ("model", model),
        ("batch", batch),
        ("hyper-parameters", _hyperparameters),
        ("code", _code),
        ("test top-1, median of the last evaluations (%)", lambda run: _median(run, "test_top1")),
        ("test top-1, logit-adjusted, median (%)", lambda run: _median(run, "test_top1_la")),
        ("latest test top-1 (%)", lambda run: final_test(run, "top1")),
        ("latest test head / medium / tail (%)",
         lambda run: " / ".join(final_test(run, group) for group in GROUPS)),
        ("best validation top-1 (%)", lambda run: _number(run.results.get("best_valid_top1"))),
        ("pseudo-label recall, head / medium / tail (%)", lambda run: _group_rates(run, "recall")),
        ("selected with the right label, head / medium / tail (%)", lambda run: _group_rates(run, "selected")),
        ("evaluations", lambda run: str(len(run.evaluations))),
        ("wall time", lambda run: _hours(run.results.get("wall_time_s"))),
        ("steps done", _progress),
    ]
    return [(name, [getter(run) for run in runs]) for name, getter in fields]


# ----------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; font-size: 90%; }
th { background: #f4f4f4; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #777; }
"""


def render_html(runs, figures):
    """The page: the table, then every figure (embedded PNG linking to its file) or why it is absent."""
    escape = html.escape
    lines = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>daso_tf report: {escape(', '.join(run.label for run in runs))}</title>",
             f"<style>{_STYLE}</style></head><body>",
             "<h1>daso_tf training report</h1>", "<h2>Runs</h2>", "<table>",
             "<tr><th></th>" + "".join(f"<th>{escape(run.label)}</th>" for run in runs) + "</tr>"]
    for name, values in summary_rows(runs):
        lines.append(f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{escape(v)}</td>" for v in values) + "</tr>")
    lines.append("</table>")
    lines.append("<p class='note'>Accuracies are of the EMA model. Pseudo-label precision and recall count every "
                 "unlabeled sample whose true class is known, selected by the confidence mask or not (the DASO "
                 "paper's Fig. 1 view; runs recorded before daso_tf 0.3 count the selected samples only): recall "
                 "of class k = samples of class k pseudo-labelled k / samples of class k; precision of class k = "
                 "samples pseudo-labelled k that are of class k / samples pseudo-labelled k. 'Selected with the "
                 "right label' = samples of class k that passed the mask with pseudo-label k / samples of class "
                 "k. Head / "
                 "medium / tail: the 30% / 40% / 30% of classes with the most / middle / fewest labeled images.</p>")
    for stem, heading, png, missing in figures:
        lines.append(f"<h2>{escape(heading)}</h2>")
        if png is None:
            lines.append(f"<p class='note'>Not drawn: {escape(missing)}.</p>")
            continue
        data = base64.b64encode(png).decode("ascii")
        lines.append(f"<a href='{stem}.png'><img alt='{escape(heading)}' src='data:image/png;base64,{data}'></a>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def write_report(run_dirs, out_dir, labels=None):
    """Writes ``out_dir/report.html`` and the figures for ``run_dirs``; returns the HTML path."""
    import matplotlib

    from daso_tf.training.results import write_bytes_atomic

    matplotlib.use("Agg")  # files only, no display
    runs = assign_labels([load_run(str(d)) for d in run_dirs], labels)
    os.makedirs(out_dir, exist_ok=True)
    figures = []
    for stem, heading, plot, missing in FIGURES:
        figure = plot(runs)
        png = None if figure is None else figure_png(figure)
        if png is not None:
            write_bytes_atomic(os.path.join(out_dir, f"{stem}.png"), png)
        figures.append((stem, heading, png, missing))
    return write_bytes_atomic(os.path.join(out_dir, REPORT_FILE), render_html(runs, figures).encode("utf-8"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (run.py --model_dir)")
    parser.add_argument("--out", required=True, help="directory for report.html and the PNG figures")
    parser.add_argument("--labels", default=None,
                        help="comma-separated legend labels, one per RUN_DIR (default: learner, experiment, seed)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    labels = None if args.labels is None else [label.strip() for label in args.labels.split(",")]
    try:
        path = write_report(args.run_dirs, args.out, labels)
    except (ReportError, OSError) as error:
        message = str(error) if isinstance(error, ReportError) else f"{error.strerror or error}: {error.filename}"
        print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
