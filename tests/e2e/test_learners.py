"""run.py and the config -> learner contract: every learner trains with its reference
hyper-parameters, what is trained is recorded, and bad input is refused before anything is
written (and before TensorFlow is imported).
"""

import json
import subprocess
import sys

import numpy as np
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
    # DebiasPL (frank-xwang/debiased-pseudo-labeling main_DebiasPL.py; the CIFAR values of USB's
    # imbalanced configs): tau 0.4, q_hat momentum 0.999, threshold 0.95 on the debiased
    # pseudo-label, lambda_u 1; FixMatch's LA off; EMA 0.999
    "debiaspl": (
        {"threshold": 0.95, "lambda_u": 1.0, "logit_adjust": False, "logit_adjust_tau": 1.0,
         "ema_decay": 0.999, "debias_tau": 0.4, "qhat_momentum": 0.999}, SSL_OPTIMIZER),
    # ACR (Gank0078/ACR train.py, README commands) on DASO's protocol: tau1 = tau12 = tau2 = 2,
    # --ema-u 0.99, est-epoch 5 of eval-step 500 (estimate from step 3000), threshold 0.95; DASO's
    # EMA (warm-up, BatchNorm averaged) and DASO's SGD (constant LR, L2 on every variable)
    "acr": (
        {"threshold": 0.95, "tau1": 2.0, "tau12": 2.0, "tau2": 2.0, "distribution_momentum": 0.99,
         "adaptation_period": 500, "estimation_start_step": 3000, "ema_warmup": True, "ema_copy_batch_norm": False,
         "ema_decay": 0.999}, dict(SSL_OPTIMIZER, l2_exclude=[])),
    # pseudolabel.yaml: CONFIDENCE_THRESHOLD 0.95, UNLABELED_LOSS_WEIGHT 1.0, linear ramp-up over
    # CONS_RAMPUP_ITERS_RATIO 0.4 of SOLVER.MAX_ITER (the run's length); EMA_DECAY 0.999
    "pseudo_label": (
        {"threshold": 0.95, "lambda_u": 1.0, "rampup_ratio": 0.4, "total_steps": TRAIN_STEPS,
         "ema_decay": 0.999}, SSL_OPTIMIZER),
    # defaults.py USADTM: DTM_THRES 0.85, UC_LOSS_WEIGHT 0.1, PRETRAIN_STEPS 500;
    # UNLABELED_LOSS_WEIGHT 1.0 (with a cross-entropy unlabeled loss); EMA_DECAY 0.999
    "usadtm": (
        {"threshold": 0.85, "lambda_u": 1.0, "lambda_uc": 0.1, "warmup_steps": 500, "ema_decay": 0.999},
        SSL_OPTIMIZER),
    # classifier_retraining.py + defaults.py: SAMPLER_BETA 0.999 (ClassAwareSampler), the plain SGD
    # (BASE_LR 0.03, no scheduler); evaluates the online model (ema_decay 0: the EMA copy is it);
    # base_run = the finished run (here the daso run)
    "crt": (
        {"sampler_beta": 0.999, "base_run": "<the daso run>", "ema_decay": 0.0, "logit_adjust": False,
         "logit_adjust_tau": 1.0}, SSL_OPTIMIZER),
}
# ACR on its own protocol (the *_acr experiments): EMA 0.999 without warm-up, BatchNorm buffers
# copied; SGD with the cosine schedule 0.03 cos(7 pi t / 16T) and no L2 on biases / BatchNorm.
ACR_PROTOCOL = (
    {"threshold": 0.95, "tau1": 2.0, "tau12": 2.0, "tau2": 2.0, "distribution_momentum": 0.99,
     "adaptation_period": 500, "estimation_start_step": 3000, "ema_warmup": False, "ema_copy_batch_norm": True,
     "ema_decay": 0.999},
    {"learning_rate": {"base_learning_rate": 0.03, "total_steps": TRAIN_STEPS, "num_cycles": 7 / 16, "warmup_steps": 0},
     "momentum": 0.9, "nesterov": True, "l2": 5e-4, "l2_exclude": ["bias", "gamma", "beta"]})
ACR_EXPERIMENTS = {  # run name: (experiment, gamma_u, reversed); TINY's gamma 5 replaces 100
    "acr+cifar10_lt_n500_acr": ("cifar10_lt_n500_acr", 5, False),
    "acr+cifar10_lt_n500_uniform_acr": ("cifar10_lt_n500_uniform_acr", 1, False),
    "acr+cifar10_lt_n500_reversed_acr": ("cifar10_lt_n500_reversed_acr", 5, True),
}
REFERENCE.update({name: ACR_PROTOCOL for name in ACR_EXPERIMENTS})
# What get_config() records besides the hyper-parameters (Keras' own keys and the data's).
RUN_KEYS = {"name", "trainable", "dtype", "num_classes", "normalization", "labeled_class_counts", "class_names"}
RUN_OVERRIDES = {
    "daso+abc": "algorithm.name=daso,algorithm.abc=true",
    # a key the user sets that the learner does not take (refused; shares the process's start-up)
    "refused": "algorithm.name=fixmatch,algorithm.warmup_steps=10",
    # the README's commands: the reference's unlabeled ratio 1
    "pseudo_label": "algorithm.name=pseudo_label,data.unlabeled_ratio=1",
    "usadtm": "algorithm.name=usadtm,data.unlabeled_ratio=1",
    # cRT on the finished daso run (run after it: {root} is the runs' directory)
    "crt": "algorithm.name=crt,algorithm.base_run={root}/daso",
    # cRT refusals: no base run, another split, an unfinished base run, base_run for another learner
    "crt_without_base_run": "algorithm.name=crt",
    "crt_other_split": "algorithm.name=crt,algorithm.base_run={root}/daso,data.seed=1",
    "crt_unfinished_base_run": "algorithm.name=crt,algorithm.base_run={root}/unfinished",
    "fixmatch_with_base_run": "algorithm.name=fixmatch,algorithm.base_run={root}/daso",
}
# ACR's split has no validation set; the uniform experiment keeps gamma_u = 1.
RUN_OVERRIDES.update({name: "data.num_valid_per_class=0" + (",data.imbalance_unlabeled=1" if gamma_u == 1 else "")
                      for name, (_, gamma_u, _) in ACR_EXPERIMENTS.items()})
EXPORTED = ("debiaspl", "acr", "acr+cifar10_lt_n500_acr")  # also exported through run.py --mode=export
REPORTED = ("debiaspl", "acr+cifar10_lt_n500_acr")  # also reported on through run.py --mode=report

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
    """{learner: (model_dir, report)}: every registered learner (and DASO + ABC, ACR on its own
    protocol, cRT's refusals) trained 2 steps; ``export:<name>``: (export_dir, report) of
    ``--mode=export``; ``report:<name>``: ``--mode=report``; cRT's own export and extension."""
    from daso_tf.config import apply_overrides, parse_overrides, write_params
    import experiments

    root = tmp_path_factory.mktemp("learners")
    data = f"data.source=folder,data.data_dir={cifar_folder},{TINY}"
    # a run that never reached its last step: params.yaml, no checkpoint
    (root / "unfinished").mkdir()
    write_params(apply_overrides(experiments.get_experiment(EXPERIMENT), parse_overrides(data)), str(root / "unfinished"))
    names = [name for name in sorted(ALGORITHMS) if name not in RUN_OVERRIDES] + list(RUN_OVERRIDES)

    def experiment(name):
        return ACR_EXPERIMENTS[name][0] if name in ACR_EXPERIMENTS else EXPERIMENT

    argvs = [[f"--experiment={experiment(name)}", f"--model_dir={root / name}",
              "--mode=train_and_eval" if name in ACR_EXPERIMENTS else "--mode=train",
              f"--params_override={data},"
              + RUN_OVERRIDES.get(name, f"algorithm.name={name}").format(root=root)] for name in names]
    for name in EXPORTED:
        names.append(f"export:{name}")
        argvs.append([f"--experiment={experiment(name)}", f"--model_dir={root / name}", "--mode=export",
                      f"--export_dir={root / ('export_' + name)}"])
    for name in REPORTED:
        names.append(f"report:{name}")
        argvs.append([f"--experiment={experiment(name)}", f"--model_dir={root / name}", "--mode=report"])
    # the cRT run's own export (its params.yaml holds everything)
    names.append("crt_export")
    argvs.append([f"--experiment={EXPERIMENT}", f"--model_dir={root / 'crt'}", "--mode=export",
                  f"--export_dir={root / 'crt_export'}"])
    # a second cRT run, extended by one step: it resumes from its own checkpoint, not the base run
    crt = f"--params_override={data}," + RUN_OVERRIDES["crt"].format(root=root)
    names += ["crt_first", "crt_extended"]
    argvs += [[f"--experiment={EXPERIMENT}", f"--model_dir={root / 'crt_twice'}", "--mode=train", crt],
              [f"--experiment={EXPERIMENT}", f"--model_dir={root / 'crt_twice'}", "--mode=train",
               crt + f",trainer.train_steps={TRAIN_STEPS + 1}"]]
    report_path = root / "report.json"
    done = subprocess.run([sys.executable, "-c", DRIVER, str(report_path)], input=json.dumps(argvs), cwd=REPO_ROOT,
                          env=run_env(), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(report_path.read_text())

    def directory(name):
        kind, _, learner = name.rpartition(":")
        return root / (("export_" if kind == "export" else "") + learner)

    return {name: (directory(name), report) for name, report in zip(names, reports)}


def test_reference_table_covers_every_registered_learner():
    # daso + abc=true: the README's DASO + ABC; acr+<experiment>: ACR on its own protocol
    assert set(REFERENCE) == set(ALGORITHMS) | {"daso+abc"} | set(ACR_EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_learner_trains_with_its_reference_hyperparameters(learner_runs, name):
    model_dir, report = learner_runs[name]
    assert report["code"] == 0, report["stderr"][-3000:]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["finished"] is True and results["step"] == TRAIN_STEPS
    if name in ("pseudo_label", "usadtm"):  # the README's command: the reference's mu = 1
        assert results["config"]["data"]["unlabeled_ratio"] == 1
    learner = results["learner"]
    assert learner["name"] == name.split("+")[0]
    expected_config, expected_optimizer = REFERENCE[name]
    if name == "crt":
        expected_config = dict(expected_config, base_run=str(model_dir.parent / "daso"))
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
@pytest.mark.parametrize("name", sorted(ACR_EXPERIMENTS))
def test_acr_protocol_experiments_use_acrs_split_and_report_the_mean(learner_runs, name):
    model_dir, report = learner_runs[name]
    assert report["code"] == 0, report["stderr"][-3000:]
    _, gamma_u, reverse = ACR_EXPERIMENTS[name]
    results = json.loads((model_dir / "results.json").read_text())
    config = results["config"]
    assert (config["data"]["split_protocol"], config["data"]["unlabeled_ratio"]) == ("acr", 1)
    assert config["model"]["batch_norm_momentum"] == 0.999
    assert results["final"]["valid"] is None and results["final"]["test"]["top1"] is not None  # no validation set
    tops = [entry["test"]["top1"] for entry in results["history"]]
    assert results["test_top1_mean20"] == pytest.approx(np.mean(tops[-20:]))
    # ACR's split (make_imb_data): int(N1 mu^k), the last class int(N1 / gamma); the unlabeled
    # set is the first N_k + M_k images of each class (the labeled ones included)
    def counts(head, gamma, reverse=False):
        mu = np.power(1.0 / gamma, 1.0 / 9)
        values = [int(head * np.power(mu, k)) for k in range(9)] + [int(head / gamma)]
        return values[::-1] if reverse else values

    labeled = sum(counts(10, 5))
    unlabeled = labeled + sum(counts(12, gamma_u, reverse))
    (total,) = [line.split() for line in report["stdout"].splitlines() if line.split()[:1] == ["total"]]
    assert total[1:4] == [str(labeled), str(unlabeled), "0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTED)
def test_debiaspl_and_acr_export_through_run_py(learner_runs, name):
    import tensorflow as tf

    export_dir, report = learner_runs[f"export:{name}"]
    assert report["code"] == 0, report["stderr"][-3000:]
    (version_dir,) = [path for path in export_dir.glob("*/1")]
    outputs = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
        images=tf.constant(np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)), tf.uint8))
    assert outputs["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(np.sum(outputs["probabilities"], axis=-1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", REPORTED)
def test_debiaspl_and_acr_runs_are_reported_on(learner_runs, name):
    # ACR's protocol: no validation set, and -2 (labeled images) in the unlabeled ground truth
    model_dir, report = learner_runs[f"report:{name}"]
    assert report["code"] == 0, report["stderr"][-3000:]
    learner = name.split("+")[0]
    experiment = ACR_EXPERIMENTS[name][0] if name in ACR_EXPERIMENTS else EXPERIMENT
    page = (model_dir / "report" / "report.html").read_text()
    assert f"{learner} {experiment} seed {SEED}" in page
    drawn = ["losses", "mask_rate"] + (["accuracy"] if name in ACR_EXPERIMENTS else [])  # debiaspl: --mode=train
    for stem in drawn:
        assert f"href='{stem}.png'" in page and (model_dir / "report" / f"{stem}.png").stat().st_size > 0
def restored_network(checkpoint_path, network):
    """The (backbone, classifier) weights of ``model.<network>`` in a run's checkpoint, read
    through TensorFlow's object graph into a fresh WRN-10-1 and Dense head (checkpoint keys
    name a variable by its shortest path, which differs between learners)."""
    import keras
    import tensorflow as tf

    from daso_tf.models import WideResNet

    backbone = WideResNet(10, 1, input_shape=(32, 32, 3))
    classifier = keras.layers.Dense(10)
    classifier.build((None, backbone.output_shape[-1]))
    parts = tf.train.Checkpoint(backbone=backbone, classifier=classifier)
    tf.train.Checkpoint(model=tf.train.Checkpoint(**{network: parts})).read(
        str(checkpoint_path)).expect_partial().assert_existing_objects_matched()
    return ({w.path: w.numpy() for w in backbone.weights}, [w.numpy() for w in classifier.weights])


@pytest.mark.slow
def test_crt_retrains_a_fresh_classifier_on_the_base_runs_online_encoder(learner_runs):
    base_dir, _ = learner_runs["daso"]
    model_dir, report = learner_runs["crt"]
    assert report["code"] == 0, report["stderr"][-3000:]
    base_checkpoint = base_dir / "checkpoints" / f"ckpt-{TRAIN_STEPS:09d}" / "ckpt"
    assert f"encoder loaded from {base_checkpoint}" in report["stdout"]
    results = json.loads((model_dir / "results.json").read_text())
    base_results = json.loads((base_dir / "results.json").read_text())
    assert results["config"]["data"] == base_results["config"]["data"]  # the base run's split
    assert results["finished"] is True
    _, export = learner_runs["crt_export"]
    assert export["code"] == 0, export["stderr"][-3000:]
    assert (model_dir.parent / "crt_export" / EXPERIMENT / "1" / "saved_model.pb").is_file()
    crt_checkpoint = model_dir / "checkpoints" / f"ckpt-{TRAIN_STEPS:09d}" / "ckpt"
    base_online, base_classifier = restored_network(base_checkpoint, "online_network")
    base_ema, _ = restored_network(base_checkpoint, "ema_network")
    crt_online, crt_classifier = restored_network(crt_checkpoint, "online_network")
    crt_ema, crt_ema_classifier = restored_network(crt_checkpoint, "ema_network")
    statistics = [path for path in crt_online if "moving_" in path]
    assert statistics and len(crt_online) > 2 * len(statistics)
    for path, value in crt_online.items():
        # frozen weights: the base run's ONLINE ones; BatchNorm statistics kept updating (training mode)
        assert np.array_equal(value, base_online[path]) != (path in statistics), path
        np.testing.assert_array_equal(crt_ema[path], value)  # evaluated network = the online one (ema_decay 0)
    assert any(not np.array_equal(base_ema[path], base_online[path]) for path in base_online)  # not the EMA
    assert not np.allclose(crt_classifier[0], base_classifier[0])  # a fresh classifier
    np.testing.assert_array_equal(crt_ema_classifier[0], crt_classifier[0])


@pytest.mark.slow
def test_an_extended_crt_run_resumes_from_its_own_checkpoint(learner_runs):
    root, first = learner_runs["crt_first"]
    root = root.parent
    _, extended = learner_runs["crt_extended"]
    assert first["code"] == 0 and extended["code"] == 0, extended["stderr"][-3000:]
    assert "encoder loaded from" in first["stdout"] and "encoder loaded from" not in extended["stdout"]
    assert f"(resuming from step {TRAIN_STEPS})" in extended["stdout"]
    assert json.loads((root / "crt_twice" / "results.json").read_text())["step"] == TRAIN_STEPS + 1


CRT_REFUSALS = {
    "crt_without_base_run": "run.py: error: algorithm.base_run=None: learner 'crt' (algorithm.name) re-trains on a "
                            "finished run's encoder; set algorithm.base_run=<its --model_dir>",
    "crt_other_split": "the base run has another data split or backbone: data.seed (base run 0, this run 1); use "
                       "the base run's --experiment and data.*/model.* overrides",
    "crt_unfinished_base_run": "the run is not finished (no checkpoint; its final checkpoint is step 2, "
                               "trainer.train_steps); finish it first",
    "fixmatch_with_base_run": "learner 'fixmatch' (algorithm.name) does not take this key",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CRT_REFUSALS))
def test_crt_refuses_a_missing_unfinished_or_different_base_run(learner_runs, name):
    model_dir, report = learner_runs[name]
    assert report["code"] == 2, report["stderr"][-3000:]
    (error,) = error_lines(report["stderr"])
    assert CRT_REFUSALS[name] in error and "Traceback" not in report["stderr"]
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
