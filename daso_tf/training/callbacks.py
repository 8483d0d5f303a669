"""Keras callbacks of a training run: step clock, progress, TensorBoard, evaluation, records, checkpoints.

``fit`` runs in segments whose epochs end on multiples of ``gcd(eval_interval,
checkpoint_interval)`` (see ``loop.plan_segments``); the ``StepClock`` turns Keras' (epoch,
batch) into the global training step without reading the step variable (no per-step host
sync). Every side effect that writes to ``model_dir`` happens on the chief only.
"""

import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

TRAIN_SCALARS = ("loss", "loss_x", "loss_u", "loss_align", "loss_uc", "mask", "loss_xb", "loss_ub", "tau1")


class StepClock(keras.callbacks.Callback):
    """Global step bookkeeping; must come first in the callback list."""

    def __init__(self, step=0):
        super().__init__()
        self.step = int(step)
        self.segment_start = int(step)
        self.steps_per_epoch = 1
        self.epoch = 0

    def begin_segment(self, first_step, steps_per_epoch):
        self.segment_start, self.steps_per_epoch, self.step = int(first_step), int(steps_per_epoch), int(first_step)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.segment_start + self.epoch * self.steps_per_epoch + batch + 1


class ProgressLogger(keras.callbacks.Callback):
    """Console progress: global step, step rate, ETA and the latest losses.

    On a terminal the line is redrawn in place every step; otherwise (logs, CI) one line
    is printed every ``log_interval`` steps.
    """

    def __init__(self, clock, total_steps, log_interval, stream=None):
        super().__init__()
        self.clock, self.total_steps, self.log_interval = clock, int(total_steps), int(log_interval)
        self.stream = stream or sys.stdout
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._t0 = None
        self._step0 = None
        self._last_losses = ""

    def on_train_begin(self, logs=None):
        self._t0, self._step0 = time.perf_counter(), self.clock.step

    def on_train_batch_end(self, batch, logs=None):
        step = self.clock.step
        at_interval = step % self.log_interval == 0 or step == self.total_steps
        if not (at_interval or self.interactive):
            return
        elapsed = time.perf_counter() - self._t0
        done = step - self._step0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        width = 24
        filled = int(width * step / max(self.total_steps, 1))
        bar = "=" * filled + (">" if filled < width else "") + "." * max(width - filled - 1, 0)
        text = f"step {step}/{self.total_steps} [{bar}] {rate:.2f} steps/s ETA {format_duration(eta)}"
        if at_interval and logs:
            # Reading the losses syncs with the device: only every log_interval steps.
            self._last_losses = " | " + " ".join(f"{k} {float(logs[k]):.4f}" for k in TRAIN_SCALARS if k in logs)
        text += self._last_losses
        if self.interactive:
            self.stream.write("\r" + text[:200] + "\033[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_train_end(self, logs=None):
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def format_duration(seconds):
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class TrainingWindow:
    """Host-side sums over a window of training steps -> one ``results.json`` ``training`` entry.

    The Keras logs (losses, mask) are averaged over the window's steps; the
    pseudo-label counts read from ``model.pseudo_label_diagnostics()`` are summed, so the
    entry's precision and recall are those of the whole window, not a mean of ratios.
    """

    def __init__(self, start_step):
        self.start_step = int(start_step)
        self.log_sums, self.log_count = {}, 0
        self.num_selected = self.num_unlabeled = 0
        self.confusion = self.confusion_all = None

    def add_logs(self, values, steps=1):
        """Adds ``values``, the means of the logs over ``steps`` steps."""
        for key, value in values.items():
            self.log_sums[key] = self.log_sums.get(key, 0.0) + steps * value
        self.log_count += steps

    def add_diagnostics(self, diagnostics):
        self.num_selected += int(diagnostics.get("num_selected", 0))
        self.num_unlabeled += int(diagnostics.get("num_unlabeled", 0))
        confusion = np.asarray(diagnostics["confusion"], dtype=np.int64)
        self.confusion = confusion if self.confusion is None else self.confusion + confusion
        if "confusion_all" in diagnostics:
            confusion_all = np.asarray(diagnostics["confusion_all"], dtype=np.int64)
            self.confusion_all = confusion_all if self.confusion_all is None else self.confusion_all + confusion_all

    def entry(self, step, learning_rate=None):
        """``{"step", "start_step", <mean logs>, "learning_rate", "pseudo_labels"}`` (JSON-ready)."""
        from daso_tf.training.evaluation import precision_recall

        entry = {"step": int(step), "start_step": self.start_step}
        entry.update({key: _finite(total / self.log_count) for key, total in self.log_sums.items()})
        entry["learning_rate"] = _finite(learning_rate)
        entry["pseudo_labels"] = None
        if self.num_unlabeled:
            confusion = self.confusion
            correct, selected, by_true_class = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
            precision, recall = precision_recall(correct, selected, by_true_class)
            entry["pseudo_labels"] = {
                "mask_rate": self.num_selected / self.num_unlabeled,
                "num_selected": self.num_selected,
                "num_unlabeled": self.num_unlabeled,
                # Per class, over the selected samples whose true class is known:
                "precision": [_finite(v) for v in precision],
                "recall": [_finite(v) for v in recall],
                "selected": selected.tolist(),  # by pseudo-label
                "correct": correct.tolist(),
                "selected_by_true_class": by_true_class.tolist(),
            }
            if self.confusion_all is not None:
                # Every unlabeled sample's pseudo-label, selected or not (the paper's Fig. 1).
                all_ = self.confusion_all
                entry["pseudo_labels"].update({
                    "correct_all": np.diag(all_).tolist(),
                    "predicted_all": all_.sum(axis=0).tolist(),  # by pseudo-label
                    "by_true_class_all": all_.sum(axis=1).tolist(),
                })
        return entry


def _finite(value):
    """A float for JSON, None where undefined (NaN, inf or absent)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TrainingSummaries(keras.callbacks.Callback):
    """TensorBoard scalars of training, averaged over each ``log_interval`` window.

    Writes losses, mask rate, learning rate, the pseudo-label histogram m and class weights
    v (DASO), and per-class pseudo-label precision/recall when the learner provides
    ``pseudo_label_diagnostics()``. The learner's train step averages its logs on the
    device (``SemiSupervisedModel.step_log_means``: the logs are means since the last
    reset), so the only device reads are at the window's end, where this callback resets
    the means. Keras also resets them when an epoch begins: a window that spans an epoch
    end keeps its first part on the host (weighted by its step count).

    The same values also feed a ``TrainingWindow`` that ``take_record()`` turns into the
    run's ``results.json`` training entry. The diagnostics reset when read, so they are read
    once per log window (or record) and used for both.
    """

    def __init__(self, clock, writer, log_interval, class_names):
        super().__init__()
        self.clock, self.writer, self.log_interval = clock, writer, int(log_interval)
        self.class_names = list(class_names)
        self._keys = None
        self._sums = None  # the window's earlier parts (host)
        self._count = 0
        self._means_since = 0  # step where the model's running means last restarted
        self._last_logs = None
        self._record = TrainingWindow(clock.step)

    def on_epoch_begin(self, epoch, logs=None):
        self._means_since = self.clock.step

    def on_train_batch_end(self, batch, logs=None):
        self._last_logs = logs or {}
        if self.clock.step % self.log_interval == 0:
            self.flush()

    def on_epoch_end(self, epoch, logs=None):
        self._hold_running_means()

    def on_train_end(self, logs=None):
        self._hold_running_means()
        if self._count:
            self.flush()

    def _hold_running_means(self):
        """Adds the model's running means since ``_means_since`` to the host window and record."""
        steps = self.clock.step - self._means_since
        if steps <= 0 or not self._last_logs:
            return
        if self._keys is None:
            self._keys = [k for k in TRAIN_SCALARS if k in self._last_logs]
            self._sums = np.zeros(len(self._keys), np.float64)
        means = np.asarray([float(self._last_logs[k]) for k in self._keys], np.float64)
        self._sums += steps * means
        self._count += steps
        self._record.add_logs(dict(zip(self._keys, means.tolist())), steps)
        self._means_since = self.clock.step

    def take_record(self):
        """The training entry of the steps since the previous record (see ``TrainingWindow``)."""
        self._hold_running_means()
        if self._count:
            self.flush()  # reads the diagnostics up to this step
        entry = self._record.entry(self.clock.step, self._learning_rate())
        self._record = TrainingWindow(self.clock.step)
        return entry

    def _learning_rate(self):
        if self.model is None or self.model.optimizer is None:
            return None
        return float(np.asarray(self.model.optimizer.learning_rate))

    def flush(self):
        self._hold_running_means()
        step_log_means = getattr(self.model, "step_log_means", None)
        if step_log_means is not None:
            step_log_means.reset_state()  # the next window starts here
        if not self._count:
            return
        step = self.clock.step
        means = self._sums / self._count
        self._sums = np.zeros(len(self._keys), np.float64)
        self._count = 0
        with self.writer.as_default(step=step):
            for key, value in zip(self._keys, means):
                tf.summary.scalar(f"train/{key}", value)
            learning_rate = self._learning_rate()
            if learning_rate is not None:
                tf.summary.scalar("train/learning_rate", learning_rate)
            self._write_daso_state()
            self._write_pseudo_label_quality()
        self.writer.flush()

    def _write_daso_state(self):
        histogram = getattr(self.model, "histogram", None)
        if histogram is None or not hasattr(histogram, "distribution"):
            return
        from daso_tf.pseudo_labels import distribution_weights

        m = np.asarray(histogram.distribution, dtype="float64")
        v = np.asarray(distribution_weights(histogram.counts, self.model.dist_temperature), dtype="float64")
        tf.summary.histogram("daso/class_weights_v", v)
        for name, values in (("histogram_m", m), ("class_weights_v", v)):
            for class_id, value in enumerate(values):
                tf.summary.scalar(f"daso_{name}/{class_id:03d}_{self.class_names[class_id]}", value)

    def _write_pseudo_label_quality(self):
        read_diagnostics = getattr(self.model, "pseudo_label_diagnostics", None)
        if read_diagnostics is None:
            return
        diagnostics = read_diagnostics()  # resets the device counters: the one read of this window
        self._record.add_diagnostics(diagnostics)
        for name, values in diagnostics.items():
            if name in ("num_selected", "num_unlabeled"):
                continue  # counts behind mask_rate
            values = np.asarray(values, dtype="float64")
            if values.ndim == 0:
                if np.isfinite(values):
                    tf.summary.scalar(f"pseudo_labels/{name}", values)
            elif values.ndim == 1:  # per class; the confusion matrix (2-d) stays out of TensorBoard
                for class_id, value in enumerate(values):
                    if np.isfinite(value):
                        tf.summary.scalar(f"pseudo_labels_{name}/{class_id:03d}_{self.class_names[class_id]}", value)


class PeriodicEvaluation(keras.callbacks.Callback):
    """Evaluates the EMA model every ``eval_interval`` steps and at the last step.

    ``evaluate_fn(step) -> entry`` does the work (see ``loop``); this callback only decides when.
    """

    def __init__(self, clock, eval_interval, total_steps, evaluate_fn):
        super().__init__()
        self.clock, self.eval_interval, self.total_steps = clock, int(eval_interval), int(total_steps)
        self.evaluate_fn = evaluate_fn

    def on_epoch_end(self, epoch, logs=None):
        step = self.clock.step
        if step % self.eval_interval == 0 or step == self.total_steps:
            self.evaluate_fn(step)


class PeriodicRecord(keras.callbacks.Callback):
    """Calls ``record_fn(step)`` at every epoch end on a multiple of one of ``intervals``
    (evaluation and checkpoint intervals) and at the last step.

    Placed after ``PeriodicEvaluation`` and before ``PeriodicCheckpoint``: the record of a
    step includes its evaluation, and a checkpoint always starts a new training window (so a
    resumed run's windows are the uninterrupted run's).
    """

    def __init__(self, clock, intervals, total_steps, record_fn):
        super().__init__()
        self.clock, self.intervals, self.total_steps = clock, [int(i) for i in intervals], int(total_steps)
        self.record_fn = record_fn

    def on_epoch_end(self, epoch, logs=None):
        step = self.clock.step
        if step == self.total_steps or any(step % interval == 0 for interval in self.intervals):
            self.record_fn(step)


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint every ``checkpoint_interval`` steps and at the last step."""

    def __init__(self, clock, checkpoint_interval, total_steps, manager, log=print):
        super().__init__()
        self.clock, self.interval, self.total_steps = clock, int(checkpoint_interval), int(total_steps)
        self.manager, self.log = manager, log

    def on_epoch_end(self, epoch, logs=None):
        step = self.clock.step
        if step % self.interval == 0 or step == self.total_steps:
            path = self.manager.save(step)
            if path:
                self.log(f"checkpoint saved: {path} (step {step})")
