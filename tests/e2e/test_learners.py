"""run.py and the config -> learner contract: every learner trains with its reference
hyper-parameters, what is trained is recorded, and bad input is refused before anything is
written (and before TensorFlow is imported).
"""

import json
import subprocess
import sys

import pytest

from daso_tf.algorithms import ALGORITHMS
from tests.e2e.runs import (EXPERIMENT, REPO_ROOT, TRAIN_PER_CLASS, error_lines, run_env, run_py,
                            tree_digest)

TRAIN_STEPS, SEED = 2, 0  # the learner runs' trainer.train_steps and data.seed
TINY = ",".join([
    "data.num_valid_per_class=2", "data.num_labeled_head=10", "data.num_unlabeled_head=12",
    "data.imbalance_labeled=5", "data.imbalance_unlabeled=5", "data.labeled_batch_size=4",
    "model.depth=10", "model.width=1", f"trainer.train_steps={TRAIN_STEPS}", "trainer.eval_interval=2",
    "trainer.checkpoint_interval=2", "trainer.log_interval=2", "trainer.eval_batches=1",
    "trainer.eval_batch_size=20", f"data.seed={SEED}",
])

# --------------------------------------------------------------------------- reference values
# Written out from the reference configs (ytaek-oh/daso configs/cifar10/*.yaml on top of
# lib/config/defaults.py). total_steps / seed are not hyper-parameters of the reference: the
# run fills them in (trainer.train_steps, data.seed).

# defaults.py SOLVER: SGD, BASE_LR 0.03 (no scheduler), MOMENTUM 0.9, NESTEROV, WEIGHT_DECAY 5e-4
SSL_OPTIMIZER = {"learning_rate": 0.03, "momentum": 0.9, "nesterov": True, "l2": 5e-4}
REFERENCE = {
    # supervised.yaml: LOGIT_ADJUST off (TAU 1.0); evaluates the trained model itself (no EMA);
    # SOLVER BASE_LR 0.1, WarmupMultiStepLR WARMUP_ITERS 6250, STEPS (199999, 225000), GAMMA 0.01
    # of a 250k-step run, stretched to these 2-step runs: warm-up 1 step (at least one), decays at
    # round(2 * 199999 / 250000) = 2 and round(2 * 225000 / 250000) = 2 (the 250k values are
    # checked in tests/training/test_learner_arguments.py).
    "supervised": (
        {"ema_decay": 0.0, "logit_adjust": False, "logit_adjust_tau": 1.0},
        {"learning_rate": {"base_learning_rate": 0.1, "warmup_steps": 1, "milestones": [2, 2],
                           "gamma": 0.01, "warmup_factor": 0.0},
         "momentum": 0.9, "nesterov": True, "l2": 5e-4}),
    # fixmatch.yaml: CONFIDENCE_THRESHOLD 0.95, UNLABELED_LOSS_WEIGHT 1.0; EMA_DECAY 0.999
    "fixmatch": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": False, "logit_adjust_tau": 1.0,
         "ema_decay": 0.999}, SSL_OPTIMIZER),
    # fixmatch_daso.yaml + defaults.py DASO: PRETRAIN_STEPS 5000, QUEUE_SIZE 256, PL_DIST_UPDATE_PERIOD
    # 100, DIST_TEMP 1.5 (gamma_l == gamma_u), PROTO_TEMP 0.05, PSA_LOSS_WEIGHT 1.0, ABC off
    "daso": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": False, "logit_adjust_tau": 1.0,
         "ema_decay": 0.999, "warmup_steps": 5000, "queue_size": 256, "histogram_period": 100,
         "dist_temperature": 1.5, "proto_temperature": 0.05, "lambda_align": 1.0, "abc": False,
         "total_steps": TRAIN_STEPS, "seed": SEED}, SSL_OPTIMIZER),
    # fixmatch_daso.yaml with ABC.APPLY True (the README's "FixMatch + ABC w/ DASO")
    "daso+abc": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": False, "logit_adjust_tau": 1.0,
         "ema_decay": 0.999, "warmup_steps": 5000, "queue_size": 256, "histogram_period": 100,
         "dist_temperature": 1.5, "proto_temperature": 0.05, "lambda_align": 1.0, "abc": True,
         "total_steps": TRAIN_STEPS, "seed": SEED}, SSL_OPTIMIZER),
    # fixmatch_abc.yaml: CONFIDENCE_THRESHOLD 0.95, UNLABELED_LOSS_WEIGHT 1.0
    "fixmatch_abc": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": False, "logit_adjust_tau": 1.0,
         "ema_decay": 0.999, "seed": SEED}, SSL_OPTIMIZER),
    # meanteacher.yaml: UNLABELED_LOSS_WEIGHT 50, linear ramp-up over 0.4 x 250k steps
    "meanteacher": ({"lambda_u": 50.0, "rampup_steps": 100000, "ema_decay": 0.999}, SSL_OPTIMIZER),
    # meanteacher.yaml with MEANTEACHER.APPLY_DASO (DASO values as for daso; no L_align)
    "meanteacher_daso": (
        {"lambda_u": 50.0, "rampup_steps": 100000, "ema_decay": 0.999, "warmup_steps": 5000,
         "queue_size": 256, "histogram_period": 100, "dist_temperature": 1.5, "proto_temperature": 0.05,
         "total_steps": TRAIN_STEPS}, SSL_OPTIMIZER),
    # mixmatch.yaml: TEMPERATURE 0.5, MIXUP_ALPHA 0.5, UNLABELED_LOSS_WEIGHT 100, ramp-up 0.016 x 250k
    "mixmatch": (
        {"temperature": 0.5, "mixup_alpha": 0.5, "lambda_u": 100.0, "rampup_steps": 4000,
         "ema_decay": 0.999, "seed": SEED}, SSL_OPTIMIZER),
    # mixmatch.yaml with MIXMATCH.APPLY_DASO (no L_align)
    "mixmatch_daso": (
        {"temperature": 0.5, "mixup_alpha": 0.5, "lambda_u": 100.0, "rampup_steps": 4000,
         "ema_decay": 0.999, "seed": SEED, "warmup_steps": 5000, "queue_size": 256, "histogram_period": 100,
         "dist_temperature": 1.5, "proto_temperature": 0.05, "total_steps": TRAIN_STEPS}, SSL_OPTIMIZER),
    # remixmatch.yaml: TEMPERATURE 0.5, MIXUP_ALPHA 0.75, UNLABELED_LOSS_WEIGHT 1.5, WEIGHT_KL 0.5,
    # WEIGHT_ROT 0.5, ramp-up 0.016 x 250k, DIST_ALIGN on (defaults.py: 128 batches)
    "remixmatch": (
        {"temperature": 0.5, "mixup_alpha": 0.75, "lambda_u": 1.5, "lambda_kl": 0.5, "lambda_rot": 0.5,
         "rampup_steps": 4000, "distribution_alignment": True, "alignment_history": 128,
         "ema_decay": 0.999, "seed": SEED}, SSL_OPTIMIZER),
    # remixmatch_daso.yaml (DIST_TEMP 1.5, PSA_LOSS_WEIGHT 1.0); DA kept on (the README's deviation)
    "remixmatch_daso": (
        {"temperature": 0.5, "mixup_alpha": 0.75, "lambda_u": 1.5, "lambda_kl": 0.5, "lambda_rot": 0.5,
         "rampup_steps": 4000, "distribution_alignment": True, "alignment_history": 128,
         "ema_decay": 0.999, "seed": SEED, "warmup_steps": 5000, "queue_size": 256,
         "histogram_period": 100, "dist_temperature": 1.5, "proto_temperature": 0.05, "lambda_align": 1.0,
         "total_steps": TRAIN_STEPS}, SSL_OPTIMIZER),
}
# What get_config() records besides the hyper-parameters (Keras' own keys and the data's).
RUN_KEYS = {"name", "trainable", "dtype", "num_classes", "normalization", "labeled_class_counts", "class_names"}
RUN_OVERRIDES = {
    "daso+abc": "algorithm.name=daso,algorithm.abc=true",
    # a key the user sets that the learner does not take (refused; shares the process's start-up)
    "refused": "algorithm.name=fixmatch,algorithm.warmup_steps=10",
}

# Runs run.py's main (absl flags parsed as on the command line) once per argv, all in one
# process, so the learners share one TensorFlow start-up; reports exit code and output.
DRIVER = r"""
import contextlib, io, json, sys, traceback
from absl import flags
import run

report = []
for argv in json.loads(sys.stdin.read()):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run.py", *argv])
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = run.main(["run.py"]) or 0
        except SystemExit as exit:
            code = exit.code
        except Exception:
            traceback.print_exc()
            code = "traceback"
    report.append({"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
"""


@pytest.fixture(scope="module")
def learner_runs(tmp_path_factory, cifar_folder):
    """{learner: (model_dir, report)}: every registered learner (and DASO + ABC) trained 2 steps."""
    root = tmp_path_factory.mktemp("learners")
    names = sorted(ALGORITHMS) + list(RUN_OVERRIDES)
    argvs = [[f"--experiment={EXPERIMENT}", f"--model_dir={root / name}", "--mode=train",
              f"--params_override=data.source=folder,data.data_dir={cifar_folder},{TINY},"
              + RUN_OVERRIDES.get(name, f"algorithm.name={name}")] for name in names]
    report_path = root / "report.json"
    done = subprocess.run([sys.executable, "-c", DRIVER, str(report_path)], input=json.dumps(argvs), cwd=REPO_ROOT,
                          env=run_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(report_path.read_text())
    return {name: (root / name, report) for name, report in zip(names, reports)}


def test_reference_table_covers_every_registered_learner():
    assert set(REFERENCE) == set(ALGORITHMS) | {"daso+abc"}  # daso + abc=true: the README's DASO + ABC


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_learner_trains_with_its_reference_hyperparameters(learner_runs, name):
    model_dir, report = learner_runs[name]
    assert report["code"] == 0, report["stderr"][-3000:]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["finished"] is True and results["step"] == TRAIN_STEPS
    learner = results["learner"]
    assert learner["name"] == name.split("+")[0]
    expected_config, expected_optimizer = REFERENCE[name]
    recorded = learner["config"]
    assert "backbone" not in recorded
    assert {key: recorded[key] for key in set(recorded) - RUN_KEYS} == expected_config
    # get_config() holds every hyper-parameter the learner takes
    assert set(ALGORITHMS[learner["name"]].hyperparameters()) <= set(recorded)
    optimizer = dict(learner["optimizer"])
    if isinstance(optimizer["learning_rate"], dict):  # a serialised schedule
        optimizer["learning_rate"] = optimizer["learning_rate"]["config"]
    assert {key: optimizer[key] for key in expected_optimizer} == expected_optimizer
    assert optimizer["weight_decay"] is None  # coupled L2 only, never Keras' decoupled decay
    # the start-up summary names the learner and every hyper-parameter value it recorded
    (line,) = [line for line in report["stdout"].splitlines() if line.startswith("learner ")]
    summary = line.split(None, 1)[1]
    assert summary.startswith(f"{learner['name']}: ")
    for key in ALGORITHMS[learner["name"]].hyperparameters():
        assert f" {key}={recorded[key]} " in f" {summary} ", key
    assert f"learning_rate={learner['optimizer']['learning_rate']}" in summary


@pytest.mark.slow
def test_experiment_keys_the_learner_does_not_take_are_reported_once(learner_runs):
    # cifar10_lt_n1500 sets algorithm.dist_temperature=1.5 (DASO's T_dist); FixMatch does not take it.
    _, report = learner_runs["fixmatch"]
    lines = [line for line in report["stdout"].splitlines() if "does not take" in line]
    assert lines == ["           algorithm keys fixmatch does not take (set by the experiment; not passed): "
                     "algorithm.dist_temperature=1.5"]
    _, report = learner_runs["daso"]
    assert "does not take" not in report["stdout"]


@pytest.mark.slow
def test_daso_with_abc_trains_through_run_py(learner_runs):
    model_dir, report = learner_runs["daso+abc"]
    import tensorflow as tf

    assert report["code"] == 0
    config = json.loads((model_dir / "results.json").read_text())["learner"]["config"]
    assert config["abc"] is True and config["seed"] == SEED
    # the checkpoint holds the ABC head the model evaluates with and its Bernoulli masks' seed state
    checkpoint = tf.train.load_checkpoint(str(model_dir / "checkpoints" / "ckpt-000000002" / "ckpt"))
    names = checkpoint.get_variable_to_shape_map()
    assert "model/ema_network/abc_classifier/_kernel/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert "model/seed_state/.ATTRIBUTES/VARIABLE_VALUE" in names


# --------------------------------------------------------------------------- bad input


@pytest.mark.slow
def test_user_key_the_learner_does_not_take_is_refused(learner_runs):
    model_dir, report = learner_runs["refused"]
    assert report["code"] == 2, report["stderr"][-3000:]
    (error,) = error_lines(report["stderr"])
    assert error.startswith("run.py: error: algorithm.warmup_steps=10: learner 'fixmatch' (algorithm.name) "
                            "does not take this key; it takes algorithm.ema_decay, ")
    assert "algorithm.threshold" in error and "Traceback" not in report["stderr"]
    assert not model_dir.exists()


def test_overrides_repeating_the_experiment_or_the_run_are_not_user_changes(tmp_path, cifar_folder):
    import run
    from daso_tf.config import ConfigError, apply_overrides, parse_overrides, write_params
    import experiments

    base = f"data.source=folder,data.data_dir={cifar_folder},{TINY},algorithm.name=fixmatch"
    # the experiment itself sets dist_temperature=1.5: repeating it is no change (reported, not refused)
    run.resolve_config(EXPERIMENT, base + ",algorithm.dist_temperature=1.5", model_dir=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="algorithm.dist_temperature=0.3: learner 'fixmatch'"):
        run.resolve_config(EXPERIMENT, base + ",algorithm.dist_temperature=0.3", model_dir=str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()
    # A params.yaml written before the algorithm keys became optional holds every value, also
    # keys FixMatch never took: re-running, or re-applying it to its own run, resumes the run.
    old = apply_overrides(experiments.get_experiment(EXPERIMENT), parse_overrides(base))
    apply_overrides(old, {"algorithm.threshold": "0.95", "algorithm.warmup_steps": "5000"})
    (tmp_path / "old").mkdir()
    write_params(old, str(tmp_path / "old"))
    params = str(tmp_path / "old" / "params.yaml")
    config, _ = run.resolve_config(EXPERIMENT, base, model_dir=str(tmp_path / "old"))
    assert (config.algorithm.threshold, config.algorithm.warmup_steps) == (0.95, 5000)  # the run's values
    run.resolve_config(EXPERIMENT, params, model_dir=str(tmp_path / "old"))
    with pytest.raises(ConfigError, match="algorithm.warmup_steps=5000: learner 'fixmatch'"):
        run.resolve_config(EXPERIMENT, params, model_dir=str(tmp_path / "new"))  # a new run: a user change


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
    """A PYTHONPATH entry under which importing TensorFlow or Keras fails."""
    root = tmp_path_factory.mktemp("no_tensorflow")
    for package in ("tensorflow", "keras"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text(
            f"raise ImportError('{package} was imported while checking the config')\n")
    return root


# (override, the text the error line must contain); every config section is covered.
BAD_VALUES = [
    ("data.dataset=imagenet", "data.dataset='imagenet': expected one of cifar10, cifar100, stl10"),
    ("data.num_labeled_head=6000", "data.num_valid_per_class=500 + data.num_labeled_head=6000 + "
                                   "data.num_unlabeled_head=3000 = 9500 training images per class are needed, "
                                   "but class 0 of the training split of cifar10 has 5000"),
    ("data.num_unlabeled_head=-1", "data.num_unlabeled_head=-1: expected an integer >= 1, or -1"),
    ("data.augmentation=bogus", "data.augmentation='bogus': expected one of reference, keras_cv, keras"),
    ("data.imbalance_labeled=0.5", "data.imbalance_labeled=0.5: expected a number >= 1"),
    ("data.labeled_batch_size=0", "data.labeled_batch_size=0: expected an integer >= 1"),
    ("data.seed=-3", "data.seed=-3: expected an integer in [0, 4294967295]"),
    ("model.depth=12", "model.depth=12: a Wide ResNet depth is 6n+4"),
    ("model.width=0", "model.width=0: expected an integer >= 1"),
    ("model.dtype_policy=float16", "model.dtype_policy='float16': expected one of float32, float64"),
    ("algorithm.threshold=1.5", "algorithm.threshold=1.5: expected a number in [0, 1]"),
    ("algorithm.proto_temperature=nan", "algorithm.proto_temperature=nan: expected a finite number > 0"),
    ("algorithm.dist_temperature=0", "algorithm.dist_temperature=0.0: expected a number > 0"),
    ("algorithm.queue_size=0", "algorithm.queue_size=0: expected an integer >= 1"),
    ("algorithm.ema_decay=1.5", "algorithm.ema_decay=1.5: expected a number in [0, 1)"),
    ("algorithm.learning_rate=-0.1", "algorithm.learning_rate=-0.1: expected a number > 0"),
    ("algorithm.momentum=1", "algorithm.momentum=1.0: expected a number in [0, 1)"),
    ("algorithm.lambda_u=-1", "algorithm.lambda_u=-1.0: expected a number >= 0"),
    ("algorithm.abc=maybe", "algorithm.abc='maybe': expected true or false or null"),
    ("trainer.train_steps=0", "trainer.train_steps=0: expected an integer >= 1"),
    ("trainer.median_window=-2", "trainer.median_window=-2: expected an integer >= 1"),
    ("runtime.mixed_precision=fp8", "runtime.mixed_precision='fp8': expected one of none, auto"),
    ("runtime.steps_per_execution=0", "runtime.steps_per_execution=0: expected an integer >= 1"),
    ("export.version=0", "export.version=0: expected an integer >= 1"),
    ("export.model_name=a/b", "export.model_name='a/b': expected a name of letters, digits"),
    ("export.checkpoint=worst", "export.checkpoint='worst': expected one of latest, best"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[case[0] for case in BAD_VALUES])
def test_bad_value_is_one_line_exit_2_nothing_written_no_tensorflow(tmp_path, no_tensorflow, override, message):
    model_dir = tmp_path / "run"
    result = run_py(model_dir, override, env=run_env(PYTHONPATH=f"{no_tensorflow}:{REPO_ROOT}"), timeout=60)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.splitlines()  # no traceback, no TensorFlow start-up noise
    assert line.startswith("run.py: error: ") and message in line, line
    assert not model_dir.exists()


def test_bad_folder_data_is_refused_before_anything_is_written(tmp_path, no_tensorflow, cifar_folder):
    env = run_env(PYTHONPATH=f"{no_tensorflow}:{REPO_ROOT}")
    folder = f"data.source=folder,data.data_dir={cifar_folder},{TINY}"
    result = run_py(tmp_path / "run", folder + f",data.num_labeled_head={TRAIN_PER_CLASS}", env=env, timeout=60)
    assert result.returncode == 2
    (error,) = error_lines(result.stderr)
    assert (f"data.num_valid_per_class=2 + data.num_labeled_head={TRAIN_PER_CLASS} + data.num_unlabeled_head=12 = "
            f"{TRAIN_PER_CLASS + 14} training images per class are needed, but class airplane of "
            f"{cifar_folder / 'train'} has {TRAIN_PER_CLASS}") in error
    broken = tmp_path / "broken"
    (broken / "train" / "cat").mkdir(parents=True)
    (broken / "train" / "cat" / "a.jpg").write_bytes(b"")
    (broken / "test" / "dog").mkdir(parents=True)
    result = run_py(tmp_path / "run", folder.replace(str(cifar_folder), str(broken)), env=env, timeout=60)
    assert result.returncode == 2
    (error,) = error_lines(result.stderr)
    assert f"data.data_dir={broken}: Class folders differ" in error and "only in train: ['cat']" in error
    assert not (tmp_path / "run").exists()


def test_bad_values_leave_an_existing_run_byte_identical(tmp_path, no_tensorflow):
    from daso_tf.config import write_params
    import experiments

    model_dir = tmp_path / "existing"
    model_dir.mkdir()
    write_params(experiments.get_experiment(EXPERIMENT), str(model_dir))
    (model_dir / "results.json").write_text("{}")
    before = tree_digest(model_dir)
    env = run_env(PYTHONPATH=f"{no_tensorflow}:{REPO_ROOT}")
    for override, message in (BAD_VALUES[3], BAD_VALUES[11], BAD_VALUES[-1]):
        result = run_py(model_dir, override, env=env, timeout=60)
        assert result.returncode == 2 and message in result.stderr
    assert tree_digest(model_dir) == before
