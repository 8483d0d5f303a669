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
    # fixmatch.yaml with ALGORITHM.DARP.APPLY True; defaults.py DARP: WARMUP_RATIO 0.4, PER_ITERS 10,
    # ALPHA 2.0, NUM_DARP_ITERS 10; the target: the true unlabeled counts (gamma_l == gamma_u here)
    "fixmatch_darp": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": False, "logit_adjust_tau": 1.0, "ema_decay": 0.999,
         "darp_warmup_ratio": 0.4, "darp_period": 10, "darp_alpha": 2.0, "darp_iterations": 10,
         "darp_estimate": None, "total_steps": TRAIN_STEPS}, SSL_OPTIMIZER),
    # the paper's FixMatch + LA + DARP: fixmatch.yaml's LOGIT_ADJUST APPLY True (TAU 1.0) with DARP
    "fixmatch_darp+la": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": True, "logit_adjust_tau": 1.0, "ema_decay": 0.999,
         "darp_warmup_ratio": 0.4, "darp_period": 10, "darp_alpha": 2.0, "darp_iterations": 10,
         "darp_estimate": None, "total_steps": TRAIN_STEPS}, SSL_OPTIMIZER),
    # darp_estim.py: labeled CE only, the trained model evaluated (no EMA); defaults.py DARP_ESTIM:
    # PER_CLASS_VALID_SAMPLES 10, THRESH_COND 100; SOLVER defaults (SGD 0.03 constant)
    "darp_estim": (
        {"ema_decay": 0.0, "logit_adjust": False, "logit_adjust_tau": 1.0, "holdout_per_class": 10,
         "max_condition_number": 100.0}, SSL_OPTIMIZER),
    # fixmatch_crest.yaml: CREST GEN_PERIOD_STEPS 50000 of MAX_ITER 250000 (5 generations; a 2-step
    # run is given 2, see RUN_OVERRIDES), ALPHA 3.0, TMIN 0.5, PROGRESSIVE_ALIGN True; DIST_ALIGN on
    "fixmatch_crest": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": False, "logit_adjust_tau": 1.0, "ema_decay": 0.999,
         "distribution_alignment": True, "alignment_history": 128, "num_generations": 2, "crest_alpha": 3.0,
         "progressive_alignment": True, "alignment_temperature_min": 0.5, "total_steps": TRAIN_STEPS,
         "seed": SEED}, SSL_OPTIMIZER),
    # remixmatch_crest.yaml: remixmatch.yaml's values, CONS_RAMPUP_ITERS_RATIO 0.016 of a generation
    # (round(0.016 * 1 step) = 0 here), CREST as fixmatch_crest.yaml
    "remixmatch_crest": (
        {"temperature": 0.5, "mixup_alpha": 0.75, "lambda_u": 1.5, "lambda_kl": 0.5, "lambda_rot": 0.5,
         "rampup_steps": 0, "distribution_alignment": True, "alignment_history": 128, "ema_decay": 0.999,
         "seed": SEED, "num_generations": 2, "crest_alpha": 3.0, "progressive_alignment": True,
         "alignment_temperature_min": 0.5, "total_steps": TRAIN_STEPS}, SSL_OPTIMIZER),
}
# What get_config() records besides the hyper-parameters (Keras' own keys and the data's).
RUN_KEYS = {"name", "trainable", "dtype", "num_classes", "normalization", "labeled_class_counts", "class_names",
            "num_unlabeled", "unlabeled_class_counts"}
MISMATCHED = "data.imbalance_unlabeled=1"  # gamma_u != gamma_l: DARP needs an estimate
RUN_OVERRIDES = {
    "daso+abc": "algorithm.name=daso,algorithm.abc=true",
    "fixmatch_darp+la": "algorithm.name=fixmatch_darp,algorithm.logit_adjust=true",
    "fixmatch_crest": "algorithm.name=fixmatch_crest,algorithm.num_generations=2",  # a generation at step 1
    "remixmatch_crest": "algorithm.name=remixmatch_crest,algorithm.num_generations=2",
    # DARP with an estimate file (written by the fixture in darp_estim's format)
    "fixmatch_darp+estimate": f"algorithm.name=fixmatch_darp,{MISMATCHED},algorithm.darp_estimate={{root}}/estimate.json",
    # a key the user sets that the learner does not take (refused; shares the process's start-up)
    "refused": "algorithm.name=fixmatch,algorithm.warmup_steps=10",
    # settings a learner cannot train (refused, one line, nothing written)
    "refused_darp_without_estimate": f"algorithm.name=fixmatch_darp,{MISMATCHED}",
    "refused_darp_estimate_classes": f"algorithm.name=fixmatch_darp,algorithm.darp_estimate={{root}}/three.json",
    "refused_darp_xla": "algorithm.name=fixmatch_darp,runtime.jit_compile=true",
    "refused_crest_generations": "algorithm.name=fixmatch_crest",  # 5 generations > 2 steps
    "refused_crest_longer": "algorithm.name=fixmatch_crest,algorithm.num_generations=2,trainer.train_steps=4",
}
# Runs in another model_dir than their name: resuming the fixmatch_crest run with other train_steps.
MODEL_DIRS = {"refused_crest_longer": "fixmatch_crest"}
# Runs of another (TFDS) experiment, on fake TFDS data: CIFAR-100 has no reference estimates
# (refused before any data is read).
EXPERIMENTS = {"refused_darp_cifar100": "cifar100_lt_n50"}
RUN_OVERRIDES["refused_darp_cifar100"] = f"algorithm.name=fixmatch_darp,{MISMATCHED}"

# Runs run.py's main (absl flags parsed as on the command line) once per argv, all in one
# process, so the learners share one TensorFlow start-up; reports exit code and output.
# An argv marked mocked runs on fake TFDS data (tests/mock_tfds.py: TFDS experiments offline).
DRIVER = r"""
import contextlib, io, json, sys, traceback
from absl import flags
import run

report = []
for mocked, argv in json.loads(sys.stdin.read()):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run.py", *argv])
    stdout, stderr = io.StringIO(), io.StringIO()
    if mocked:
        from tests.mock_tfds import mock_tfds
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
            (mock_tfds() if mocked else contextlib.nullcontext()):
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
    (root / "estimate.json").write_text(json.dumps({"estimate": [5, 4, 3, 3, 2, 2, 1, 1, 1, 1]}))
    (root / "three.json").write_text(json.dumps({"estimate": [1, 1, 1]}))
    names = [name for name in sorted(ALGORITHMS) if name not in RUN_OVERRIDES] + list(RUN_OVERRIDES)
    argvs = []
    for name in names:
        override = RUN_OVERRIDES.get(name, f"algorithm.name={name}").format(root=root)
        if name in EXPERIMENTS:
            argvs.append([True, [f"--experiment={EXPERIMENTS[name]}", f"--model_dir={root / name}", "--mode=train",
                                 f"--params_override={override}"]])
            continue
        argvs.append([False, [f"--experiment={EXPERIMENT}", f"--model_dir={root / MODEL_DIRS.get(name, name)}",
                              "--mode=train", f"--params_override=data.source=folder,data.data_dir={cifar_folder},"
                              f"{TINY},{override}"]])
    report_path = root / "report.json"
    done = subprocess.run([sys.executable, "-c", DRIVER, str(report_path)], input=json.dumps(argvs), cwd=REPO_ROOT,
                          env=run_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(report_path.read_text())
    return {name: (root / name, report) for name, report in zip(names, reports)}


def test_reference_table_covers_every_registered_learner():
    # daso + abc=true: the README's DASO + ABC; fixmatch_darp + logit_adjust=true: FixMatch + LA + DARP
    assert set(REFERENCE) == set(ALGORITHMS) | {"daso+abc", "fixmatch_darp+la"}


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


@pytest.mark.slow
def test_dataset_wide_passes_run_inside_run_py(learner_runs):
    # CReST: 2 generations of 1 step: the second starts at step 1 with the first's selection
    for name in ("fixmatch_crest", "remixmatch_crest"):
        model_dir, report = learner_runs[name]
        assert "generation 2/2 from step 1: " in report["stdout"], report["stdout"][-2000:]
        import tensorflow as tf

        checkpoint = tf.train.load_checkpoint(str(model_dir / "checkpoints" / "ckpt-000000002" / "ckpt"))
        assert checkpoint.get_tensor("model/generation/.ATTRIBUTES/VARIABLE_VALUE") == 1
        selected = checkpoint.get_tensor("model/pseudo_labeled/.ATTRIBUTES/VARIABLE_VALUE")
        assert selected.shape == (57,) and (selected >= 0).any()  # 57 unlabeled images in TINY
    # DARP_ESTIM estimates at every evaluation (whether its 2-step classifier's estimate is
    # accepted is up to the data: the file is only written once one is)
    _, report = learner_runs["darp_estim"]
    assert "DARP estimate at step 2: " in report["stdout"]
    # DARP with an estimate file: trains, and records where its target came from
    model_dir, report = learner_runs["fixmatch_darp+estimate"]
    assert report["code"] == 0, report["stderr"][-3000:]
    config = json.loads((model_dir / "results.json").read_text())["learner"]["config"]
    assert config["darp_estimate"] == str(model_dir.parent / "estimate.json") and config["num_unlabeled"] == 120


REFUSALS = {
    "refused_darp_without_estimate": "algorithm.darp_estimate unset: learner 'fixmatch_darp' needs an estimate of the "
                                     "unlabeled class distribution",
    "refused_darp_cifar100": "the reference has none for cifar100_l_50_10_ul_400_1",
    "refused_darp_estimate_classes": "three.json: holds 3 classes; data.dataset=cifar10 has 10",
    "refused_darp_xla": "runtime.jit_compile=True: learner 'fixmatch_darp' solves DARP on the host",
    "refused_crest_generations": "algorithm.num_generations=5: expected at most trainer.train_steps=2",
    "refused_crest_longer": "trainer.train_steps=4: learner 'fixmatch_crest' splits the run into generations",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_settings_a_learner_cannot_train_are_refused(learner_runs, name):
    model_dir, report = learner_runs[name]
    assert report["code"] == 2, report["stderr"][-3000:]
    (error,) = error_lines(report["stderr"])
    assert REFUSALS[name] in error and "Traceback" not in report["stderr"]
    if name in MODEL_DIRS:  # the run there is untouched
        results = json.loads((model_dir.parent / MODEL_DIRS[name] / "results.json").read_text())
        assert results["train_steps"] == TRAIN_STEPS and results["finished"]
    else:
        assert not model_dir.exists()


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
