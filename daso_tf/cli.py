"""The command line: train, evaluate, export or report on a registered DASO experiment.

``run.py`` (in a checkout) and the installed ``daso-tf`` command are this module:

    python run.py --experiment=cifar10_lt_n1500 [--model_dir=runs/cifar10_lt_n1500]
        [--mode=train_and_eval|train|eval|export|report]
        [--params_override=trainer.train_steps=1000,data.seed=1 | --params_override=my.yaml]
    python run.py --list_experiments

``--mode=report`` writes ``<model_dir>/report/report.html`` and its figures
(``daso_tf.tools.report``) from what the run has recorded so far; it needs neither the
dataset nor TensorFlow, and may run while the run is training.

Re-running the same command resumes from the last checkpoint in --model_dir. Keys of the
data/model/algorithm sections must match the run's params.yaml (the run is refused
otherwise); trainer.* / runtime.* / export.* keys may change (more trainer.train_steps
extends a finished run; another strategy or device count resumes it).

Bad input (unknown experiment, unknown or mistyped key, bad value, missing data, params
mismatch, unwritable model_dir) ends with one line on stderr and exit status 2, before
anything in --model_dir is touched.
"""

import os
import sys
import traceback

from absl import app, flags, logging

MODES = ("train_and_eval", "train", "eval", "export", "report")

flags.DEFINE_string("experiment", None, "Registered experiment name (see --list_experiments).")
flags.DEFINE_enum("mode", "train_and_eval", MODES, "What to do.")
flags.DEFINE_string("model_dir", None, "Run directory (default: runs/<experiment>).")
flags.DEFINE_string("params_override", "",
                    "Comma-separated dotted key=value pairs (e.g. trainer.train_steps=1000) and/or paths "
                    "of YAML files with config sections; later items win.")
flags.DEFINE_string("export_dir", None, "--mode=export: where to write the SavedModel (export.export_dir).")
flags.DEFINE_string("report_dir", None, "--mode=report: where to write report.html and the figures "
                    "(default: <model_dir>/report).")
flags.DEFINE_bool("list_experiments", False, "List the registered experiments and exit.")
FLAGS = flags.FLAGS

EXIT_BAD_INPUT = 2


def resolve_config(experiment, params_override="", export_dir=None, model_dir=None, mode="train_and_eval"):
    """(config, model_dir): the experiment's config with overrides applied, checked against model_dir.

    For eval/export the stored params.yaml is the base (so the command needs no overrides).
    Every value is checked before anything is created in model_dir: the config's own
    constraints (no TensorFlow needed), the data, then the learner's keys and (cRT) its
    base run. An algorithm key
    the user changed (an override that differs from what the experiment, or the run being
    resumed, has) that the chosen learner does not take is refused.
    """
    from daso_tf import experiments
    from daso_tf.config import apply_overrides, changed_keys, fill_unset, parse_overrides
    from daso_tf.training.base_run import check_base_run
    from daso_tf.training.learner_arguments import check_learner_keys
    from daso_tf.training.model_dir import check_data_source, check_model_dir, check_stored_run, load_run_config

    config = experiments.get_experiment(experiment)
    overrides = parse_overrides(params_override)
    if export_dir:
        overrides["export.export_dir"] = export_dir
    model_dir = model_dir or os.path.join("runs", experiment)
    user_keys = ()
    if mode in ("eval", "export"):
        config = load_run_config(model_dir, overrides, mode)
    else:
        apply_overrides(config, overrides)
        config.validate()
        stored = check_stored_run(config, model_dir, mode)
        if stored is not None:
            fill_unset(config, stored).validate()  # a key left unset keeps the run's value
        user_keys = changed_keys(config, overrides, experiments.get_experiment(experiment), stored)
    check_data_source(config.data)
    check_learner_keys(config, user_keys)  # imports the learners (TensorFlow): after the cheap checks
    if mode not in ("eval", "export"):
        check_base_run(config, model_dir)  # cRT: a finished base run with this run's split
        check_model_dir(config, model_dir, mode)  # creates model_dir: after every other check
    return config, model_dir


def program_name():
    """How the user invoked us: ``run.py`` in a checkout, ``daso-tf`` when installed."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "daso-tf" if invoked == "daso-tf" else "run.py"


def bad_input(message):
    print(f"{program_name()}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def main(argv):
    if len(argv) > 1:
        bad_input(f"unexpected arguments {' '.join(argv[1:])} (all settings are --flags; see --help)")
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines drown the progress output
    from daso_tf.config import ConfigError
    from daso_tf.training.checkpoints import CheckpointMismatchError
    from daso_tf import experiments

    if FLAGS.list_experiments:
        print(experiments.experiment_table())
        return 0
    if FLAGS.mode == "report":
        return report(FLAGS.experiment, FLAGS.model_dir, FLAGS.report_dir, FLAGS.params_override)
    if not FLAGS.experiment:
        bad_input(f"--experiment is required; known experiments: {', '.join(experiments.list_experiments())}")
    try:
        config, model_dir = resolve_config(FLAGS.experiment, FLAGS.params_override, FLAGS.export_dir,
                                           FLAGS.model_dir, FLAGS.mode)
        from daso_tf.training import configure_devices, run_experiment

        configure_devices(config.runtime)  # before any TensorFlow op
        run_experiment(config, model_dir, FLAGS.mode)
    except (ConfigError, CheckpointMismatchError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        if os.environ.get("DASO_TRACEBACK"):
            traceback.print_exc()
        bad_input(_one_line(error))
    return 0


def report(experiment, model_dir, report_dir, params_override):
    """--mode=report: the one-page report of the run in model_dir (no TensorFlow, no dataset)."""
    from daso_tf import experiments
    from daso_tf.config import ConfigError
    from daso_tf.tools.report import ReportError, write_report

    if params_override:
        bad_input("--params_override has no effect with --mode=report (it reads what the run recorded)")
    if not model_dir:
        if not experiment:
            bad_input("--mode=report needs --model_dir (or --experiment, for runs/<experiment>)")
        try:
            experiments.get_entry(experiment)
        except ConfigError as error:
            bad_input(_one_line(error))
        model_dir = os.path.join("runs", experiment)
    try:
        path = write_report([model_dir], report_dir or os.path.join(model_dir, "report"))
    except (ReportError, OSError) as error:
        bad_input(_one_line(error))
    print(f"report written: {path}")
    return 0


def _one_line(error):
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.strerror}: {error.filename}"
    return " ".join(text.split())


def run():
    """Entry point of ``run.py`` and of the ``daso-tf`` console script."""
    app.run(main)


if __name__ == "__main__":
    run()
