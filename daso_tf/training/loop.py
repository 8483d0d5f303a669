"""One run of an experiment: data -> model -> fit with callbacks -> results (spec section 7).

``run_experiment(config, model_dir, mode)`` is what ``run.py`` calls once the config is
resolved and ``model_dir`` checked (``model_dir.check_model_dir``). Modes:

- ``train_and_eval``: train to ``trainer.train_steps``, evaluating the EMA model every
  ``trainer.eval_interval`` steps on validation and test; resumes from the last checkpoint;
- ``train``: the same without evaluation;
- ``eval``: evaluate the latest checkpoint once (``<model_dir>/eval_results.json``);
- ``export``: SavedModel of the latest (or best) checkpoint via ``export.export_saved_model``.

A training run holds the run directory's lock (``run_lock``) from before its first write
to its end, so a second run on the same directory is refused. A write that fails for lack
of space ends the run with one ``DiskFullError`` line saying what failed, where the last
good checkpoint is and how much space the next one needs.

Training runs in Keras ``fit`` segments whose epochs end on multiples of
``gcd(eval_interval, checkpoint_interval)``, so evaluation and checkpoints happen at epoch
ends, and a run resumed at any checkpointed step lines up again after one short segment.
"""

import contextlib
import math
import os
import re
import shutil
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from daso_tf import io_utils
from daso_tf.config import AUTO, write_params
from daso_tf.provenance import provenance
from daso_tf.training import callbacks as callbacks_lib
from daso_tf.training.base_run import final_checkpoint
from daso_tf.training.checkpoints import CheckpointManager
from daso_tf.training.distribute import (check_divisible, chief_decides, in_multi_worker_mode,
                                         input_pipeline_for_replicas, is_chief, is_chief_task, make_strategy,
                                         synchronize_batch_norm, task_info,
                                         wrap_train_logs_for_multi_worker)
from daso_tf.training.distribution_estimation import ESTIMATE_FILE, DistributionEstimation
from daso_tf.training.evaluation import classification_metrics
from daso_tf.training.generations import GenerationLoop
from daso_tf.training.learner_arguments import describe_learner, learner_arguments, learner_record
from daso_tf.training.results import (EvaluationHistory, RESULTS_FILE, TrainingHistory, read_results,
                                      write_results)
from daso_tf.training.run_lock import RunDirLock

# runtime.steps_per_execution=auto runs at most this many steps per host round trip.
MAX_AUTO_STEPS_PER_EXECUTION = 100


def plan_segments(start_step, total_steps, period, boundaries=()):
    """``fit`` calls covering [start_step, total_steps): ``[(first_step, epochs, steps_per_epoch)]``.

    Every epoch ends on a multiple of ``period`` or at ``total_steps``; no ``fit`` call
    crosses one of ``boundaries`` (steps where something must happen between two calls,
    e.g. a new CReST generation).
    """
    cuts = sorted(b for b in set(boundaries) if start_step < b < total_steps)
    if cuts:
        pieces = zip([start_step] + cuts, cuts + [total_steps])
        return [segment for first, last in pieces for segment in plan_segments(first, last, period)]
    segments, step = [], int(start_step)
    if step >= total_steps:
        return segments
    if step % period:
        boundary = min((step // period + 1) * period, total_steps)
        segments.append((step, 1, boundary - step))
        step = boundary
    full_epochs = (total_steps - step) // period
    if full_epochs:
        segments.append((step, full_epochs, period))
        step += full_epochs * period
    if step < total_steps:
        segments.append((step, 1, total_steps - step))
    return segments


# ----------------------------------------------------------------------------- building blocks


def set_precision_policy(config):
    if config.model.dtype_policy == "float64":
        keras.config.set_dtype_policy("float64")
    elif config.runtime.mixed_precision == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        keras.config.set_dtype_policy("mixed_float16" if gpus else "mixed_bfloat16")
    elif config.runtime.mixed_precision != "none":
        keras.config.set_dtype_policy(config.runtime.mixed_precision)
    else:
        keras.config.set_dtype_policy("float32")


def resolve_switches(config, strategy):
    """``(jit_compile, augment_on_device)`` with ``auto`` resolved: on where a GPU computes
    and one replica runs (XLA: and the learner's step compiles, ``xla_compatible``) (on several replicas, on-device augmentation draws other images than
    one device, and XLA is untested there); explicit true/false are kept."""
    from daso_tf.algorithms import get_algorithm

    runtime = config.runtime
    accelerated = bool(tf.config.list_logical_devices("GPU")) and strategy.num_replicas_in_sync == 1
    xla_compatible = get_algorithm(config.algorithm.name).xla_compatible  # e.g. not DARP's host solve
    jit_compile = (accelerated and xla_compatible) if runtime.jit_compile == AUTO else bool(runtime.jit_compile)
    if runtime.augment_on_device == AUTO:
        augment_on_device = accelerated and config.data.augmentation == "reference"
    else:
        augment_on_device = bool(runtime.augment_on_device)
    return jit_compile, augment_on_device


def resolve_steps_per_execution(config, start_step, strategy, boundaries=()):
    """Train steps per host round trip for a run starting at ``start_step``.

    Every fit epoch (``plan_segments``) and every log window must be a whole number of
    executions: an explicit value is reduced to its gcd with the first and last step and the
    learner's ``boundaries`` (CReST's generation starts; the intervals are validated
    multiples); ``auto`` is the largest divisor, at most ``MAX_AUTO_STEPS_PER_EXECUTION``, of
    the gcd of the log/eval/checkpoint intervals, the first and last step and the boundaries
    (50 for the paper settings), and 1 under multi-worker collectives (Keras' multi-step
    loop fails there with TF 2.21).
    """
    trainer = config.trainer
    ends = math.gcd(trainer.train_steps, int(start_step), *(int(b) for b in boundaries))
    requested = config.runtime.steps_per_execution
    if requested != AUTO:
        return math.gcd(int(requested), ends)
    if in_multi_worker_mode(strategy):
        return 1
    aligned = math.gcd(trainer.log_interval, trainer.eval_interval, trainer.checkpoint_interval, ends)
    return max(d for d in range(1, min(aligned, MAX_AUTO_STEPS_PER_EXECUTION) + 1) if aligned % d == 0)


def load_data(data_config):
    """The long-tailed splits of ``data_config`` (``daso_tf.data.LongTailedData``)."""
    from daso_tf import data as data_lib

    source = data_lib.load_source(data_config.dataset, source=data_config.source, data_dir=data_config.data_dir)
    return data_lib.make_long_tailed_data(
        source,
        num_valid_per_class=data_config.num_valid_per_class,
        num_labeled_head=data_config.num_labeled_head,
        num_unlabeled_head=data_config.num_unlabeled_head,
        imbalance_labeled=data_config.imbalance_labeled,
        imbalance_unlabeled=data_config.imbalance_unlabeled,
        reverse_unlabeled=data_config.reverse_unlabeled,
        seed=data_config.seed,
        split_protocol=data_config.split_protocol,
    )


def build_model(config, lt_data, strategy):
    """The learner named by ``config.algorithm.name``, built and compiled under ``strategy``.

    It gets the ``algorithm`` keys that are set and that it takes, plus ``total_steps`` and
    ``seed`` from the run (``daso_tf.training.learner_arguments``) and what it derives from
    the data (its ``data_arguments``); its optimiser is its ``default_optimizer`` with the
    optimiser keys that are set.
    """
    from daso_tf import data as data_lib
    from daso_tf.models import WideResNet

    size = config.data.image_size
    arguments = learner_arguments(config)
    jit_compile, augment_on_device = resolve_switches(config, strategy)
    # TrainingRun.train sets the run's value once it knows the first step.
    steps_per_execution = 1 if config.runtime.steps_per_execution == AUTO else config.runtime.steps_per_execution
    keras.utils.set_random_seed(config.data.seed)  # initial weights are part of the run's seed
    with strategy.scope():
        backbone = WideResNet(config.model.depth, config.model.width, input_shape=(size, size, 3),
                              batch_norm_momentum=config.model.batch_norm_momentum)
        model = arguments.algorithm_class(
            backbone,
            len(lt_data.class_names),
            normalization=data_lib.NORMALIZATION[config.data.dataset],
            labeled_class_counts=[int(c) for c in lt_data.labeled_counts],
            class_names=list(lt_data.class_names),
            augment_on_device=augment_on_device,
            augment_seed=config.data.seed,
            **{**arguments.algorithm_class.data_arguments(config, lt_data), **arguments.model_kwargs},
        )
        model.build((None, size, size, 3))
        if strategy.num_replicas_in_sync > 1:
            synchronize_batch_norm(model)
        optimizer = arguments.algorithm_class.default_optimizer(**arguments.optimizer_kwargs)
        with warnings.catch_warnings():
            # Keras turns XLA off under op determinism (some XLA GPU ops have no deterministic
            # kernel); the XLA CPU step is deterministic, and an explicit request is kept.
            warnings.filterwarnings("ignore", message="Model doesn't support `jit_compile=True`")
            model.compile(optimizer=optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution)
        if jit_compile and not model.jit_compile and config.runtime.deterministic:
            model._jit_compile = True
        model.optimizer.build(model.trainable_variables)
    wrap_train_logs_for_multi_worker(model, strategy)
    return model


def count_parameters(model):
    return int(sum(np.prod(v.shape) for v in model.online_network.weights if v.trainable))


def make_eval_datasets(config, lt_data):
    from daso_tf import data as data_lib

    datasets = {}
    for split, images, labels in (("valid", lt_data.valid_images, lt_data.valid_labels),
                                  ("test", lt_data.test_images, lt_data.test_labels)):
        if len(labels) == 0:
            continue
        if config.trainer.eval_batches > 0:
            # A partial evaluation must see every class: the sets are stored class by class,
            # so take a fixed, seeded sample rather than the first batches.
            count = min(len(labels), config.trainer.eval_batches * config.trainer.eval_batch_size)
            keep = np.sort(np.random.RandomState(config.data.seed).permutation(len(labels))[:count])
            images, labels = np.asarray(images)[keep], np.asarray(labels)[keep]
        dataset = data_lib.eval_stream(images, labels, batch_size=config.trainer.eval_batch_size,
                                       output_size=config.data.image_size)
        datasets[split] = dataset
    return datasets


class Evaluator:
    """EMA-model metrics on the validation and test sets (inference-mode BatchNorm)."""

    def __init__(self, model, datasets, labeled_counts):
        self.model, self.datasets = model, datasets
        self.labeled_counts = [int(c) for c in labeled_counts]
        self._logits = tf.function(lambda images: model(images, training=False))

    def __call__(self):
        results = {}
        for split, dataset in self.datasets.items():
            logits, labels = [], []
            for images, batch_labels in dataset:
                logits.append(np.asarray(tf.cast(self._logits(images), tf.float64)))
                labels.append(np.asarray(batch_labels))
            results[split] = classification_metrics(np.concatenate(logits), np.concatenate(labels),
                                                    self.labeled_counts)
        return results


def startup_summary(config, model_dir, mode, strategy, lt_data, model, start_step):
    devices = ", ".join(d.name.replace("/job:localhost/replica:0/task:0/device:", "")
                        for d in tf.config.list_logical_devices() if d.device_type in ("CPU", "GPU"))
    task_type, task_id = task_info()
    code = provenance()
    commit = f", commit {code['git_commit'][:12]}{'+changes' if code['git_dirty'] else ''}" if code["git_commit"] else ""
    lines = [
        "=" * 78,
        f"experiment {config.name}   mode {mode}   model_dir {model_dir}",
        f"code       daso_tf {code['daso_tf']}{commit}; TensorFlow {code['tensorflow']}, Keras {code['keras']}",
        f"data       {config.data.dataset} (source {config.data.source}"
        f"{', ' + config.data.data_dir if config.data.data_dir else ''}), seed {config.data.seed}, "
        f"batch {config.data.labeled_batch_size} labeled + {config.data.unlabeled_ratio}x"
        f"{config.data.labeled_batch_size} unlabeled",
    ]
    summary = lt_data.summary() if hasattr(lt_data, "summary") else ""
    lines += [f"           {line}" for line in summary.splitlines()]
    lines += [
        f"model      {config.algorithm.name} on WRN-{config.model.depth}-{config.model.width}, "
        f"{count_parameters(model):,} trainable parameters, policy {keras.config.dtype_policy().name}, "
        f"XLA {_switch(model.jit_compile, config.runtime.jit_compile)}, augmentation on "
        f"{'device' if model.augment_on_device else 'host'} ({config.runtime.augment_on_device}), "
        f"{model.steps_per_execution} step(s) per execution ({config.runtime.steps_per_execution})",
    ]
    lines.append(f"learner    {describe_learner(learner_record(config.algorithm.name, model))}")
    not_taken = learner_arguments(config).not_taken
    if not_taken:  # set by the experiment (run.py refuses such keys from the user)
        lines.append(f"           algorithm keys {config.algorithm.name} does not take (set by the experiment; "
                     "not passed): " + ", ".join(f"{key}={value!r}" for key, value in not_taken.items()))
    lines += [
        f"strategy   {type(strategy).__name__} ({config.runtime.distribution_strategy}), "
        f"{strategy.num_replicas_in_sync} replica(s); task {task_type}:{task_id}; devices {devices}",
        f"schedule   step {start_step} -> {config.trainer.train_steps}, eval every {config.trainer.eval_interval}, "
        f"checkpoint every {config.trainer.checkpoint_interval}"
        + (f" (resuming from step {start_step})" if start_step else ""),
        "=" * 78,
    ]
    return "\n".join(lines)


def _switch(value, configured):
    return f"{'on' if value else 'off'} ({configured})"


# ----------------------------------------------------------------------------- the run


class TrainingRun:
    """Everything a run holds: config, data, strategy, model, checkpoints, history, writers."""

    def __init__(self, config, model_dir, mode, log=print):
        self.config, self.model_dir, self.mode, self.log = config, model_dir, mode, log
        set_precision_policy(config)
        self.strategy = make_strategy(config.runtime)
        self.chief = is_chief(self.strategy)
        if not self.chief:
            self.log = lambda *args, **kwargs: None  # one console report per run: the chief's
        check_divisible(self.strategy, **{
            "data.labeled_batch_size": config.data.labeled_batch_size,
            "data.labeled_batch_size * data.unlabeled_ratio":
                config.data.labeled_batch_size * config.data.unlabeled_ratio})
        self.lt_data = load_data(config.data)
        self.class_names = list(self.lt_data.class_names)
        self.model = build_model(config, self.lt_data, self.strategy)
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
        _, worker_id = task_info()
        self.checkpoints = CheckpointManager(
            checkpoint, os.path.join(model_dir, "checkpoints"),
            max_to_keep=config.trainer.keep_checkpoints, is_chief=self.chief, worker_id=worker_id, log=self.log)

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, step):
        """Evaluates the EMA model; history, TensorBoard, console and best checkpoint (results: ``_record``)."""
        metrics = self.evaluator()
        entry = self.history.append(step, metrics.get("valid"), metrics.get("test"))
        window = self.config.trainer.median_window
        with self.writer.as_default(step=step):
            for split, values in metrics.items():
                for name in ("top1", "top1_la", "head", "medium", "tail"):
                    if values.get(name) is not None:
                        tf.summary.scalar(f"eval_{split}/{name}", values[name])
                for class_id, value in enumerate(values["per_class"]):
                    if value is not None:
                        tf.summary.scalar(f"eval_{split}_per_class/{class_id:03d}_{self.class_names[class_id]}", value)
            if entry["test_top1_median"] is not None:
                tf.summary.scalar(f"eval_test/top1_median{window}", entry["test_top1_median"])
        self.writer.flush()
        valid, test = metrics.get("valid") or {}, metrics.get("test") or {}
        self.log(f"eval step {step}: valid top1 {valid.get('top1', float('nan')):.2f} | test top1 "
                 f"{test.get('top1', float('nan')):.2f} (LA {test.get('top1_la', float('nan')):.2f}; head/medium/tail "
                 f"{_fmt(test.get('head'))}/{_fmt(test.get('medium'))}/{_fmt(test.get('tail'))}) | "
                 f"test median-{window} {_fmt(entry['test_top1_median'])}")
        best = self.checkpoints.best_info()
        valid_top1 = valid.get("top1")
        # Saving involves every worker: the chief (which holds the files) decides for all.
        if chief_decides(self.strategy, valid_top1 is not None and (best is None or valid_top1 > best["valid_top1"])):
            self.checkpoints.save_best(step, valid_top1)
        return entry

    def _record(self, step):
        """Closes the training window ending at ``step`` and rewrites results.json."""
        self.training_history.append(self.summaries.take_record())
        self._write_results(step, finished=False)

    def _write_results(self, step, finished):
        if not self.chief:
            return
        write_results(self.model_dir, config=self.config, history=self.history, step=step, finished=finished,
                      wall_time_s=self.previous_wall_time + time.perf_counter() - self.t0,
                      class_names=self.class_names, training=self.training_history,
                      labeled_counts=self.lt_data.labeled_counts, unlabeled_counts=self.lt_data.unlabeled_counts,
                      learner=learner_record(self.config.algorithm.name, self.model))

    # ---------------------------------------------------------------- training
    def train(self, evaluate=True):
        config, trainer = self.config, self.config.trainer
        self.t0 = time.perf_counter()
        restored = self.checkpoints.restore_latest()
        base_run = getattr(self.model, "base_run", None)
        if restored is None and base_run is not None:
            # A fresh cRT run: the encoder of the base run's final checkpoint (checked by run.py).
            base_checkpoint = final_checkpoint(base_run)
            self.model.load_encoder(base_checkpoint)
            self.log(f"encoder loaded from {base_checkpoint}")
        start_step = int(self.model.step.numpy())
        if restored is not None and restored != start_step:
            raise RuntimeError(f"checkpoint {restored} holds step {start_step}; the checkpoint directory is inconsistent")
        previous = read_results(self.model_dir) if restored is not None else None
        self.previous_wall_time = float((previous or {}).get("wall_time_s", 0.0))
        self.history = EvaluationHistory.from_results(previous, up_to_step=start_step,
                                                      median_window=trainer.median_window)
        self.training_history = TrainingHistory.from_results(previous, up_to_step=start_step)
        # Only now, with the checkpoint and results.json read, does the run write anything.
        if self.chief:
            os.makedirs(self.model_dir, exist_ok=True)
            io_utils.remove_stale_temporaries(self.model_dir)  # of writes a kill interrupted
            write_params(config, self.model_dir)
            if restored is not None:
                self.checkpoints.prune(restored)  # a kill may have come between a save and its pruning
            self.checkpoints.drop_damaged_best()
        self.writer = (tf.summary.create_file_writer(os.path.join(self.model_dir, "tensorboard"))
                       if self.chief else tf.summary.create_noop_writer())
        # Learners with passes over a whole dataset between steps (CReST's generations,
        # DARP_ESTIM's estimates); see generations.py / distribution_estimation.py.
        passes = dict(batch_size=trainer.eval_batch_size, output_size=config.data.image_size, log=self.log)
        generations = GenerationLoop(self.model, self.lt_data, **passes) if GenerationLoop.drives(self.model) else None
        boundaries = generations.boundaries(trainer.train_steps) if generations else ()
        steps_per_execution = resolve_steps_per_execution(config, start_step, self.strategy, boundaries)
        if steps_per_execution != self.model.steps_per_execution:
            self.model.steps_per_execution = steps_per_execution
            self.model.train_function = None  # traced again with the new loop length
        self.log(startup_summary(config, self.model_dir, self.mode, self.strategy, self.lt_data, self.model, start_step))
        self.evaluator = Evaluator(self.model, make_eval_datasets(config, self.lt_data), self.lt_data.labeled_counts)
        estimation = None
        if DistributionEstimation.drives(self.model):
            estimation = DistributionEstimation(
                self.model, self.lt_data, interval=trainer.eval_interval, total_steps=trainer.train_steps,
                output_path=os.path.join(self.model_dir, ESTIMATE_FILE), write=self.chief, **passes)
        self.training_data = estimation.training_data() if estimation else self.lt_data

        clock = callbacks_lib.StepClock(start_step)
        self.summaries = callbacks_lib.TrainingSummaries(clock, self.writer, trainer.log_interval, self.class_names)
        callback_list = [clock, self.summaries]
        if evaluate:
            callback_list.append(callbacks_lib.PeriodicEvaluation(
                clock, trainer.eval_interval, trainer.train_steps, self._evaluate))
        callback_list.append(callbacks_lib.PeriodicRecord(
            clock, (trainer.eval_interval, trainer.checkpoint_interval), trainer.train_steps, self._record))
        if estimation:  # before the checkpoint of the same step: its state is in the model
            callback_list.append(estimation)
        callback_list.append(callbacks_lib.PeriodicCheckpoint(
            clock, trainer.checkpoint_interval, trainer.train_steps, self.checkpoints,
            log=self.log if self.chief else (lambda *_: None)))
        if self.chief:
            callback_list.append(callbacks_lib.ProgressLogger(clock, trainer.train_steps, trainer.log_interval))

        period = math.gcd(trainer.eval_interval, trainer.checkpoint_interval)
        segments = plan_segments(start_step, trainer.train_steps, period, boundaries)
        if not segments:
            self.log(f"already trained to step {start_step} (trainer.train_steps={trainer.train_steps}); "
                     "raise trainer.train_steps to continue")
        for first_step, epochs, steps_per_epoch in segments:
            if generations:
                if generations.advance(first_step):
                    # The new generation (selection, fresh weights) is model state: checkpoint
                    # it at once, so a resumed run continues it instead of recomputing it.
                    self.checkpoints.save(first_step)
                self.training_data = generations.training_data()
            clock.begin_segment(first_step, steps_per_epoch)
            dataset = input_pipeline_for_replicas(self.strategy, lambda first=first_step: self._train_stream(first))
            self.model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callback_list, verbose=0,
                           shuffle=False)
        final_step = int(self.model.step.numpy())
        latest = self.history.latest()
        if evaluate and chief_decides(self.strategy, latest is None or latest["step"] != final_step):
            self._evaluate(final_step)
        self._write_results(final_step, finished=final_step >= trainer.train_steps)
        self.writer.flush()
        window = trainer.median_window
        median = self.history.median("test", "top1")
        if evaluate:
            self.log(f"done: step {final_step}, test top-1 median-{window} {_fmt(median)}; "
                     f"results in {os.path.join(self.model_dir, RESULTS_FILE)}")
        return {"step": final_step, f"test_top1_median{window}": median}

    def _train_stream(self, start_step):
        from daso_tf import data as data_lib

        known = bool(np.any(np.asarray(self.lt_data.unlabeled_labels) >= 0))
        return data_lib.train_stream(
            self.training_data,  # lt_data, or the learner's current labeled set (CReST, DARP_ESTIM)
            labeled_batch_size=self.config.data.labeled_batch_size,
            unlabeled_ratio=self.config.data.unlabeled_ratio,
            seed=self.config.data.seed,
            augmentation=self.config.data.augmentation,
            output_size=self.config.data.image_size,
            start_step=start_step,
            with_unlabeled_labels=known,
            # e.g. ("weak", "strong", "strong") for ReMixMatch; FixMatch/DASO: weak + strong.
            # (Supervised and cRT use none; one weak view keeps the batch structure uniform.)
            unlabeled_views=tuple(getattr(self.model, "unlabeled_views", ("weak", "strong"))) or ("weak",),
            # raw uint8 batches; the model's train step augments them with the same keys.
            augment_on_device=self.model.augment_on_device,
            # cRT: class-aware labeled batches (None: without replacement, every epoch reshuffled).
            class_aware_beta=self.model.sampler_beta,
            with_unlabeled_indices=self.model.needs_unlabeled_indices,  # e.g. DARP's per-sample state
        )

    # ---------------------------------------------------------------- eval / export
    def evaluate_once(self):
        step = self.checkpoints.restore_latest()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.checkpoints.directory}")
        metrics = Evaluator(self.model, make_eval_datasets(self.config, self.lt_data), self.lt_data.labeled_counts)()
        payload = {"step": step, "checkpoint": self.checkpoints.path_for(step), **metrics}
        if self.chief:
            io_utils.write_json(os.path.join(self.model_dir, "eval_results.json"), payload)
        for split, values in metrics.items():
            self.log(f"{split}: top1 {values['top1']:.2f}  LA top1 {values['top1_la']:.2f}  head/medium/tail "
                     f"{_fmt(values['head'])}/{_fmt(values['medium'])}/{_fmt(values['tail'])}")
        return payload

    def export(self):
        export_config = self.config.export
        if export_config.checkpoint == "best":
            best = self.checkpoints.best_info()
            if best is None:
                raise FileNotFoundError(f"no best checkpoint in {self.checkpoints.directory}")
            self.checkpoints.restore(best["path"])
            path = best["path"]
        else:
            step = self.checkpoints.restore_latest()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.checkpoints.directory}")
            path = self.checkpoints.path_for(step)
        from daso_tf.serving import export_saved_model

        export_dir = export_config.export_dir or os.path.join(self.model_dir, "export")
        size = self.config.data.image_size
        result = export_saved_model(
            self.model, export_dir, model_name=export_config.model_name or self.config.name,
            version=export_config.version, class_names=self.class_names, image_size=(size, size),
            overwrite=export_config.overwrite, max_image_pixels=export_config.max_image_pixels)
        self.log(f"exported {path} -> {result}")
        return result

    def disk_full_error(self, error):
        """``error`` (a failed write) as one DiskFullError line: what failed, the last good
        checkpoint, the space the next checkpoint needs and what is free."""
        path = getattr(error, "path", None) or _path_in_error(error) or self.model_dir
        reason = io_utils.disk_full_error(error, path).reason
        step = self.checkpoints.latest_step if self.chief else None
        if step is None:
            kept = "no checkpoint had been saved yet"
        else:
            kept = f"the last good checkpoint, {os.path.dirname(self.checkpoints.path_for(step))} (step {step}), is intact"
        needed = self.checkpoints.size_estimate() or sum(  # no checkpoint yet: the variables' bytes
            int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
            for v in [*self.model.weights, *self.model.optimizer.variables])
        existing = next(p for p in (self.checkpoints.directory, self.model_dir, "/") if os.path.isdir(p))
        free = shutil.disk_usage(existing).free
        return io_utils.DiskFullError(
            f"disk full: writing {path} failed ({reason}); {kept}; a checkpoint needs about "
            f"{io_utils.format_bytes(needed)} and {io_utils.format_bytes(free)} are free in {existing}. Free some "
            "space and re-run the same command: the run resumes from its last checkpoint", path=path, reason=reason)


def _path_in_error(error):
    """The file a TensorFlow write error names ("<path>; No space left on device")."""
    match = re.search(r"(/[^\s;]+)[;:]\s*(?:No space left|File too large|Disk quota)", str(error))
    return match.group(1) if match else None


def _fmt(value):
    return "n/a" if value is None else f"{value:.2f}"


def run_experiment(config, model_dir, mode="train_and_eval", log=print):
    """Runs ``mode`` for ``config`` in ``model_dir`` (already validated by run.py).

    Training holds ``<model_dir>/run.lock`` (chief only) and raises ``run_lock.RunDirLockedError``
    when another process holds it; a write that fails for lack of space raises
    ``io_utils.DiskFullError`` (one line).
    """
    training = mode in ("train_and_eval", "train")
    lock = contextlib.nullcontext()
    if training and is_chief_task(config.runtime):
        os.makedirs(model_dir, exist_ok=True)
        lock = RunDirLock(model_dir, log=log)
    with lock:
        run = TrainingRun(config, model_dir, mode, log=log)
        try:
            if mode == "train_and_eval":
                return run.train(evaluate=True)
            if mode == "train":
                return run.train(evaluate=False)
            if mode == "eval":
                return run.evaluate_once()
            if mode == "export":
                return run.export()
        except Exception as error:  # noqa: BLE001 - only disk-full errors are translated
            if not io_utils.is_disk_full(error):
                raise
            raise run.disk_full_error(error) from None
    raise ValueError(f"unknown mode {mode!r}")
