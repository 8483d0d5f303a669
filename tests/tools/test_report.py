"""daso_tf.tools.report on hand-written run directories (fast; no TensorFlow, no training).

The real run.py -> results.json -> ``run.py --mode=report`` path is tested in tests/e2e/test_run.py.
"""

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from daso_tf.config import ExperimentConfig
from daso_tf.tools import report
from tests.conftest import REPO_ROOT

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# N1=1500 M1=3000 gamma=100 on CIFAR-10, as the split computes them.
LABELED = [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
UNLABELED = [3000, 1798, 1078, 646, 387, 232, 139, 83, 50, 30]
FIGURES = ["accuracy", "per_class_accuracy", "pseudo_label_quality", "pseudo_label_distribution", "mask_rate",
           "losses"]


def _config(algorithm="daso", reverse=False, train_steps=3000, seed=0):
    config = ExperimentConfig(name="cifar10_lt_n1500_reversed" if reverse else "cifar10_lt_n1500")
    config.algorithm.name, config.data.reverse_unlabeled, config.data.seed = algorithm, reverse, seed
    config.trainer.train_steps = train_steps
    return config.to_dict()


def _metrics(top1, shift=0.0):
    per_class = [max(0.0, min(100.0, 95.0 - 8.0 * k + shift)) for k in range(10)]
    return {"top1": top1, "top1_la": top1 + 2.0, "per_class": per_class, "head": 80.0, "medium": 55.5, "tail": 20.25}


def _window(step, width, selected_share, ground_truth=True):
    """A training entry whose pseudo-label counts follow ``selected_share`` (per class)."""
    selected = np.round(np.asarray(selected_share) * 200).astype(int)
    correct = (selected * 3) // 4
    by_true = correct + np.arange(10)  # tail classes lose more of their samples to other classes
    if not ground_truth:
        selected = correct = by_true = np.zeros(10, int)
    return {"step": step, "start_step": step - width, "loss": 1.0 + 1000.0 / step, "loss_x": 0.5 + 500.0 / step,
            "loss_u": 0.3, "loss_align": 0.1 if step > 1500 else 0.0, "mask": 0.4 + step / 10000,
            "learning_rate": 0.03,
            "pseudo_labels": {"mask_rate": 0.4 + step / 10000, "num_selected": 100, "num_unlabeled": 250,
                              "precision": [None] * 10, "recall": [None] * 10, "selected": selected.tolist(),
                              "correct": correct.tolist(), "selected_by_true_class": by_true.tolist()}}


def make_run(directory, *, algorithm="daso", reverse=False, steps=3000, train_steps=3000, seed=0, median=61.25,
             ground_truth=True, extra=None):
    """A run directory as run.py leaves it: params.yaml + results.json (evaluations every 500 steps)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = _config(algorithm, reverse, train_steps, seed)
    (directory / "params.yaml").write_text(yaml.safe_dump(config))
    share = np.linspace(2.0, 0.2, 10) if algorithm == "fixmatch" else np.linspace(1.0, 0.6, 10)
    share = share / share.sum()
    steps_list = list(range(500, steps + 1, 500))
    history = [{"step": s, "valid": _metrics(40.0 + s / 100), "test": _metrics(39.0 + s / 100, shift=s / 300),
                "test_top1_median": None, "valid_top1_median": None} for s in steps_list]
    results = {
        "experiment": config["name"], "finished": steps >= train_steps, "step": steps, "train_steps": train_steps,
        "test_top1_median20": median, "test_top1_la_median20": median + 2, "valid_top1_median20": median + 1,
        "best_valid_top1": 70.5, "final": history[-1] if history else None,
        "per_class_accuracy": {"class_names": CLASSES, "test": history[-1]["test"]["per_class"] if history else None,
                               "valid": None},
        "labeled_counts": LABELED, "unlabeled_counts": (UNLABELED[::-1] if reverse else UNLABELED) if ground_truth
        else None,
        "history": history, "training": [_window(s, 500, share, ground_truth) for s in steps_list],
        "config": config, "wall_time_s": 5400.0,
    }
    results.update(extra or {})
    (directory / "results.json").write_text(json.dumps(results))
    return directory


def check_png(path):
    """A real PNG of a useful size that is not blank."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 500 and image.height >= 300
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10, f"{path.name} looks blank (pixel std {pixels.std():.1f})"
    return data


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    daso = make_run(root / "daso_s0", extra={
        "provenance": {"daso_tf": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": True,
                       "tensorflow": "2.21.0", "python": None},
        "learner": {"name": "daso", "config": {"warmup_steps": 4000, "dist_temperature": 1.5}}})
    fixmatch = make_run(root / "fixmatch_s0", algorithm="fixmatch", median=57.5)
    out = root / "report"
    assert report.main([str(daso), str(fixmatch), "--out", str(out)]) == 0
    return daso, fixmatch, out


def test_report_of_two_runs_embeds_every_figure_and_the_table(two_runs):
    daso, fixmatch, out = two_runs
    page = (out / "report.html").read_text()
    for stem in FIGURES:
        data = check_png(out / f"{stem}.png")
        assert f"href='{stem}.png'" in page
        assert base64.b64encode(data).decode("ascii") in page, f"{stem}.png is not the embedded image"
    assert "Not drawn" not in page
    # The table: one column per run, values as recorded.
    assert "daso cifar10_lt_n1500 seed 0" in page and "fixmatch cifar10_lt_n1500 seed 0" in page
    assert "61.25 (median-20)" in page and "57.50 (median-20)" in page and "63.25 (median-20)" in page
    assert "80.00 / 55.50 / 20.25" in page  # latest test head / medium / tail
    assert "1.50 h" in page and "70.50" in page
    assert "3000 / 3000: finished; latest checkpoint none" in page
    assert "daso_tf 0.1.0, git_commit 0123456789ab+changes, tensorflow 2.21.0" in page
    assert "warm-up 4000" in page  # the learner's recorded value wins over the config's
    assert "cifar10 (tfds): N1=1500 M1=3000 gamma_l=100 gamma_u=100" in page
    assert str(daso) in page and str(fixmatch) in page


def test_one_run_and_labels_override(tmp_path, two_runs):
    daso, _, _ = two_runs
    out = tmp_path / "one"
    path = report.write_report([daso], out, labels=["DASO (ours)"])
    page = open(path).read()
    assert "<th>DASO (ours)</th>" in page and "seed 0</th>" not in page
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{s}.png" for s in FIGURES] + ["report.html"])
    for stem in FIGURES:
        check_png(out / f"{stem}.png")


def test_same_default_labels_get_the_directory(tmp_path):
    runs = [make_run(tmp_path / "a"), make_run(tmp_path / "b")]
    labelled = report.assign_labels([report.load_run(str(r)) for r in runs])
    assert [run.label for run in labelled] == ["daso cifar10_lt_n1500 seed 0 (a)", "daso cifar10_lt_n1500 seed 0 (b)"]


def test_run_still_going_and_run_just_started(tmp_path):
    partial = make_run(tmp_path / "partial", steps=1000, train_steps=6000)
    (partial / "checkpoints" / "ckpt-000001500").mkdir(parents=True)
    (partial / "checkpoints" / "ckpt-000001500" / "ckpt.index").write_bytes(b"")
    started = tmp_path / "started"
    started.mkdir()
    (started / "params.yaml").write_text(yaml.safe_dump(_config(train_steps=6000)))
    out = tmp_path / "out"
    page = open(report.write_report([partial, started], out)).read()
    # Still going: results.json at step 1000, a newer checkpoint at 1500.
    assert "1500 / 6000: not finished (running or stopped); latest checkpoint 1500" in page
    # Just started: params.yaml only; nothing recorded yet, still a valid report.
    assert "0 / 6000: not finished (running or stopped); latest checkpoint none" in page
    for stem in FIGURES:
        check_png(out / f"{stem}.png")  # drawn from the partial run


def test_nothing_recorded_yet_is_said_not_drawn(tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    (started / "params.yaml").write_text(yaml.safe_dump(_config()))
    out = tmp_path / "out"
    page = open(report.write_report([started], out)).read()
    assert page.count("Not drawn:") == len(FIGURES)
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


def test_unknown_unlabeled_classes_skip_the_pseudo_label_figures(tmp_path):
    """STL-10: no unlabeled ground truth, so no precision/recall; the mask rate is still there."""
    run = make_run(tmp_path / "stl", ground_truth=False)
    out = tmp_path / "out"
    page = open(report.write_report([run], out)).read()
    assert not (out / "pseudo_label_quality.png").exists() and not (out / "pseudo_label_distribution.png").exists()
    assert page.count("Not drawn:") == 2
    check_png(out / "mask_rate.png")


def test_learners_without_a_mask_have_no_mask_rate_curve(tmp_path):
    run = make_run(tmp_path / "mean_teacher", algorithm="mean_teacher")
    results = json.loads((run / "results.json").read_text())
    for entry in results["training"]:
        entry["pseudo_labels"], entry["mask"] = None, 0.0  # what such a learner records
    (run / "results.json").write_text(json.dumps(results))
    out = tmp_path / "out"
    page = open(report.write_report([run], out)).read()
    assert "Not drawn: no training window of a learner with a confidence mask recorded yet" in page
    assert not (out / "mask_rate.png").exists()
    check_png(out / "losses.png")


def test_usadtm_clustering_loss_has_its_own_loss_panel(tmp_path):
    run = make_run(tmp_path / "usadtm", algorithm="usadtm")
    results = json.loads((run / "results.json").read_text())
    for entry in results["training"]:
        entry.pop("loss_align")
        entry["loss_uc"] = -0.05  # USADTM's IIC loss is a negative mutual information
    (run / "results.json").write_text(json.dumps(results))
    figure = report.plot_losses([report.load_run(run)])
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == [f"{key} (mean over each recorded window)" for key in ("loss_x", "loss_u", "loss_uc")]
    assert list(figure.axes[2].lines[0].get_ydata()) == [-0.05] * len(results["training"])


def test_last_window_and_pooled_rates_by_hand():
    entries = [{"step": s, "start_step": s - 100, "pseudo_labels": {"mask_rate": 0.5}} for s in range(100, 3001, 100)]
    # Last 10% of 3000 steps: the windows ending after step 2700.
    assert [e["step"] for e in report.final_window(entries)] == [2800, 2900, 3000]
    coarse = [{"step": s, "start_step": s - 1000, "pseudo_labels": {"mask_rate": 0.5}} for s in (1000, 2000, 3000)]
    assert [e["step"] for e in report.final_window(coarse)] == [3000]  # at least the last window
    assert report.final_window([{"step": 10, "pseudo_labels": None}]) == []

    def window(correct, selected, by_true):
        return {"step": 1, "pseudo_labels": {"correct": correct, "selected": selected,
                                             "selected_by_true_class": by_true}}

    precision, recall = report.pseudo_label_rates(
        [window([3, 0, 1], [4, 2, 1], [6, 0, 1]), window([1, 0, 0], [4, 0, 0], [2, 1, 0])], 3)
    # class 0: 4 correct of 8 selected, of 8 selected samples truly class 0; class 1: 0/2 and 0/1.
    np.testing.assert_allclose(precision, [50.0, 0.0, 100.0])
    np.testing.assert_allclose(recall, [50.0, 0.0, 100.0])
    precision, recall = report.pseudo_label_rates([window([0, 0, 0], [0, 1, 0], [1, 0, 0])], 3)
    assert np.isnan(precision[0]) and precision[1] == 0.0 and np.isnan(recall[1])


def test_classes_run_from_head_to_tail():
    order, groups = report.class_order([5, 40, 10, 40, 1, 7, 3, 20, 2, 30])
    assert order.tolist() == [1, 3, 9, 7, 2, 5, 0, 6, 8, 4]  # ties: lower id first
    assert [g.tolist() for g in (groups["head"], groups["medium"], groups["tail"])] == [[1, 3, 9], [7, 2, 5, 0],
                                                                                       [6, 8, 4]]


def test_labels_must_match_the_runs(tmp_path, two_runs, capsys):
    daso, fixmatch, _ = two_runs
    assert report.main([str(daso), str(fixmatch), "--out", str(tmp_path / "out"), "--labels", "only one"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--labels has 1 label(s) for 2 run directories" in error
    assert not (tmp_path / "out").exists()


def test_a_directory_that_is_not_a_run_is_one_error_line(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    completed = subprocess.run([sys.executable, "-m", "daso_tf.tools.report", str(tmp_path / "notes"),
                                "--out", str(tmp_path / "out")], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"python -m daso_tf.tools.report: error: {tmp_path / 'notes'} is not a run directory (no results.json or "
        "params.yaml; expected the --model_dir of a run.py run)"]
    assert not (tmp_path / "out").exists()
    assert report.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_older_runs_fall_back_to_the_tensorboard_window_means(tmp_path):
    """A run recorded before results.json held ``training``: losses and mask from its event files."""
    import tensorflow as tf

    run = make_run(tmp_path / "old")
    results = json.loads((run / "results.json").read_text())
    del results["training"], results["labeled_counts"], results["unlabeled_counts"]
    (run / "results.json").write_text(json.dumps(results))
    writer = tf.summary.create_file_writer(str(run / "tensorboard"))
    with writer.as_default():
        for step, mask in ((50, 0.1), (100, 0.3), (100, 0.35), (150, 0.5)):  # step 100 again: a resume
            tf.summary.scalar("train/mask", mask, step=step)
            tf.summary.scalar("train/loss_x", 2.0 / step * 50, step=step)
            tf.summary.scalar("eval_test/top1", 50.0, step=step)  # not a training window value
    writer.close()
    events = next((run / "tensorboard").glob("events.out.tfevents.*"))
    with open(events, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00partial")  # a record still being written
    logged = report.load_run(str(run)).training
    assert [(e["step"], round(e["mask"], 6), round(e["loss_x"], 6)) for e in logged] == [
        (50, 0.1, 2.0), (100, 0.35, 1.0), (150, 0.5, 0.666667)]
    assert all("pseudo_labels" not in e for e in logged)  # no counts in TensorBoard
    out = tmp_path / "out"
    page = open(report.write_report([run], out)).read()
    check_png(out / "mask_rate.png")
    check_png(out / "losses.png")
    assert "Not drawn: no per-class evaluation with labeled class counts recorded yet" in page


def test_all_sample_pseudo_label_rates_by_hand(tmp_path):
    """Runs that record every sample's pseudo-label report recall over all samples of a class
    and the selected-with-the-right-label rate, per head / medium / tail group."""
    run = make_run(tmp_path / "run", steps=500, train_steps=500)
    results = json.loads((run / "results.json").read_text())
    by_true = [100] * 10
    correct_all = [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]  # head 0-2, medium 3-6, tail 7-9
    correct_selected = [45, 40, 35, 30, 25, 20, 15, 10, 5, 0]
    predicted_all = [200, 150, 100, 100, 100, 100, 100, 50, 50, 50]
    results["training"][-1]["pseudo_labels"].update(
        correct=correct_selected, correct_all=correct_all, predicted_all=predicted_all, by_true_class_all=by_true)
    (run / "results.json").write_text(json.dumps(results))
    out = tmp_path / "out"
    assert report.main([str(run), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    # recall: head (90+80+70)/3, medium (60+50+40+30)/4, tail (20+10+0)/3
    assert "80.00 / 45.00 / 10.00" in page
    # selected with the right label: half of the above
    assert "40.00 / 22.50 / 5.00" in page
    loaded = report.load_run(str(run))
    precision, recall = report.pseudo_label_rates(loaded.training, 10, report.counts_over(loaded))
    np.testing.assert_allclose(recall, correct_all)  # by_true = 100 per class
    np.testing.assert_allclose(precision[:3], [45.0, 80 / 1.5, 70.0])
