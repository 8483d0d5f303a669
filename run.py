"""Train, evaluate or export a registered DASO experiment.

    python run.py --experiment=cifar10_lt_n1500 [--model_dir=runs/cifar10_lt_n1500]
        [--mode=train_and_eval|train|eval|export]
        [--params_override=trainer.train_steps=1000,data.seed=1 | --params_override=my.yaml]
    python run.py --list_experiments

Re-running the same command resumes from the last checkpoint in --model_dir. Keys of the
data/model/algorithm sections must match the run's params.yaml (the run is refused
otherwise); trainer.* / runtime.* / export.* keys may change (more trainer.train_steps
extends a finished run; another strategy or device count resumes it).

Bad input (unknown experiment, unknown or mistyped key, bad value, missing data, params
mismatch, unwritable model_dir) ends with one line on stderr and exit status 2, before
anything in --model_dir is touched. So does a --model_dir another run is training in, or
one whose checkpoints or results.json are all damaged. A full disk ends the run with one
line and exit status 75 (EX_TEMPFAIL: re-run the same command once space is freed).
"""

import os
import sys
import traceback

from absl import app, flags, logging

MODES = ("train_and_eval", "train", "eval", "export")

flags.DEFINE_string("experiment", None, "Registered experiment name (see --list_experiments).")
flags.DEFINE_enum("mode", "train_and_eval", MODES, "What to do.")
flags.DEFINE_string("model_dir", None, "Run directory (default: runs/<experiment>).")
flags.DEFINE_string("params_override", "",
                    "Comma-separated dotted key=value pairs (e.g. trainer.train_steps=1000) and/or paths "
                    "of YAML files with config sections; later items win.")
flags.DEFINE_string("export_dir", None, "--mode=export: where to write the SavedModel (export.export_dir).")
flags.DEFINE_bool("list_experiments", False, "List the registered experiments and exit.")
FLAGS = flags.FLAGS

EXIT_BAD_INPUT = 2
EXIT_DISK_FULL = 75  # sysexits.h EX_TEMPFAIL: retry later


def resolve_config(experiment, params_override="", export_dir=None, model_dir=None, mode="train_and_eval"):
    """(config, model_dir): the experiment's config with overrides applied, checked against model_dir.

    For eval/export the stored params.yaml is the base (so the command needs no overrides).
    """
    from daso_tf.config import apply_overrides, parse_overrides
    from daso_tf.training.model_dir import check_data_source, check_model_dir, load_run_config
    import experiments

    config = experiments.get_experiment(experiment)
    overrides = parse_overrides(params_override)
    if export_dir:
        overrides["export.export_dir"] = export_dir
    model_dir = model_dir or os.path.join("runs", experiment)
    if mode in ("eval", "export"):
        config = load_run_config(model_dir, overrides, mode)
    else:
        apply_overrides(config, overrides)
        config.validate()
        check_model_dir(config, model_dir, mode)
    check_algorithm(config.algorithm.name)
    check_data_source(config.data)
    return config, model_dir


def check_algorithm(name):
    from daso_tf.algorithms import ALGORITHMS
    from daso_tf.config import ConfigError

    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm.name={name!r}: expected one of {', '.join(sorted(ALGORITHMS))}")


def bad_input(message, status=EXIT_BAD_INPUT):
    print(f"run.py: error: {message}", file=sys.stderr)
    sys.exit(status)


def main(argv):
    if len(argv) > 1:
        bad_input(f"unexpected arguments {' '.join(argv[1:])} (all settings are --flags; see --help)")
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines drown the progress output
    from daso_tf.config import ConfigError
    from daso_tf.io_utils import DiskFullError
    from daso_tf.training.checkpoints import CheckpointMismatchError
    from daso_tf.training.model_dir import RunDirectoryError
    import experiments

    if FLAGS.list_experiments:
        print(experiments.experiment_table())
        return 0
    if not FLAGS.experiment:
        bad_input(f"--experiment is required; known experiments: {', '.join(experiments.list_experiments())}")
    try:
        config, model_dir = resolve_config(FLAGS.experiment, FLAGS.params_override, FLAGS.export_dir,
                                           FLAGS.model_dir, FLAGS.mode)
        from daso_tf.training import configure_devices, run_experiment

        configure_devices(config.runtime)  # before any TensorFlow op
        run_experiment(config, model_dir, FLAGS.mode)
    except DiskFullError as error:
        if os.environ.get("DASO_TRACEBACK"):
            traceback.print_exc()
        bad_input(_one_line(error), status=EXIT_DISK_FULL)
    except (ConfigError, CheckpointMismatchError, RunDirectoryError, FileNotFoundError, NotADirectoryError,
            PermissionError) as error:
        if os.environ.get("DASO_TRACEBACK"):
            traceback.print_exc()
        bad_input(_one_line(error))
    return 0


def _one_line(error):
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.strerror}: {error.filename}"
    return " ".join(text.split())


if __name__ == "__main__":
    app.run(main)
