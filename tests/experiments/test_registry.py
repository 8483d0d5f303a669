"""experiments: every paper setting registered with the paper's hyper-parameters, and each
experiment's data config building the paper's split (through TFDS, on fake data)."""

import dataclasses
import re

import numpy as np
import pytest

from daso_tf import experiments
from tests.paper_splits import paper_split

PAPER_SETTINGS = [
    "cifar10_lt_n500", "cifar10_lt_n1500", "cifar10_lt_n500_g150", "cifar10_lt_n1500_g150",
    "cifar10_lt_n500_uniform", "cifar10_lt_n1500_uniform", "cifar10_lt_n500_reversed",
    "cifar10_lt_n1500_reversed", "cifar100_lt_n50", "cifar100_lt_n150", "cifar100_lt_n50_g20",
    "cifar100_lt_n150_g20", "stl10_lt_n150_g10", "stl10_lt_n450_g10", "stl10_lt_n150_g20",
    "stl10_lt_n450_g20",
]


def test_all_paper_settings_registered():
    assert set(PAPER_SETTINGS) <= set(experiments.list_experiments())


@pytest.mark.parametrize("name", PAPER_SETTINGS)
def test_reference_hyperparameters(name):
    config = experiments.get_experiment(name)
    data, algorithm = config.data, config.algorithm
    assert config.name == name
    assert algorithm.name == "daso"
    assert (data.labeled_batch_size, data.unlabeled_ratio, config.trainer.train_steps) == (64, 2, 250_000)
    assert (config.model.depth, config.model.width) == (28, 2)
    # Only T_dist differs between settings; every other DASO hyper-parameter is left unset, i.e.
    # the learner's reference value (tests/e2e/test_learners.py checks what the learner gets).
    assert {key for key, value in dataclasses.asdict(algorithm).items() if value is not None} == {
        "name", "dist_temperature"}
    assert config.trainer.eval_interval == 500
    n1 = int(re.search(r"_n(\d+)", name).group(1))
    assert data.num_labeled_head == n1
    if data.dataset == "cifar10":
        assert data.num_unlabeled_head == {500: 4000, 1500: 3000}[n1]
        assert data.num_valid_per_class == 500
        matched = data.imbalance_labeled == data.imbalance_unlabeled and not data.reverse_unlabeled
        assert algorithm.dist_temperature == (1.5 if matched else 0.3)
    elif data.dataset == "cifar100":
        assert data.num_unlabeled_head == {50: 400, 150: 300}[n1]
        assert data.num_valid_per_class == 50 and algorithm.dist_temperature == 0.3
    else:
        assert data.num_unlabeled_head == -1 and data.num_valid_per_class == 50
        assert algorithm.dist_temperature == 0.3


@pytest.fixture(scope="module")
def tfds_sources():
    """Each dataset loaded once through the real TFDS path of load_source, on fake data with
    the real structure and per-class counts (tests/mock_tfds.py)."""
    from daso_tf.data import load_source
    from tests.mock_tfds import mock_tfds

    with mock_tfds():
        return {name: load_source(name, source="tfds") for name in ("cifar10", "cifar100", "stl10")}


@pytest.mark.parametrize("name", PAPER_SETTINGS)
def test_each_experiment_builds_the_papers_split(name, tfds_sources, monkeypatch):
    import daso_tf.data
    from daso_tf.training.loop import load_data

    config = experiments.get_experiment(name)
    monkeypatch.setattr(daso_tf.data, "load_source", lambda dataset, **kwargs: tfds_sources[dataset])
    data = load_data(config.data)  # what run.py does with the experiment's data config
    labeled, unlabeled, valid, test = paper_split(name)
    assert data.labeled_counts == labeled
    assert np.bincount(data.labeled_labels, minlength=len(labeled)).tolist() == labeled
    assert data.valid_counts == valid
    assert np.bincount(data.test_labels, minlength=len(labeled)).tolist() == test
    size = 96 if config.data.dataset == "stl10" else 32
    assert data.labeled_images.shape[1:] == data.test_images.shape[1:] == (size, size, 3)
    if unlabeled is None:  # STL-10: the whole 'unlabelled' split, labels unknown
        assert data.unlabeled_counts is None
        assert len(data.unlabeled_images) == len(tfds_sources["stl10"].unlabeled_images)
        assert (data.unlabeled_labels == -1).all()
    else:
        assert data.unlabeled_counts == unlabeled
        assert np.bincount(data.unlabeled_labels, minlength=len(labeled)).tolist() == unlabeled


def test_paper_numbers_from_results_md():
    assert experiments.get_entry("cifar10_lt_n500").paper_top1 == 76.0
    assert experiments.get_entry("cifar100_lt_n150_g20").paper_top1 == 52.9
    assert experiments.get_entry("stl10_lt_n450_g20").paper_top1 == 75.3


def test_each_factory_returns_a_fresh_config():
    a = experiments.get_experiment("cifar10_lt_n500")
    a.data.seed = 99
    assert experiments.get_experiment("cifar10_lt_n500").data.seed == 0


def test_unknown_experiment_lists_known():
    with pytest.raises(experiments.UnknownExperimentError, match="unknown experiment 'cifar10_lt'.*cifar10_lt_n500"):
        experiments.get_experiment("cifar10_lt")


ACR_PROTOCOL = {  # experiment: (gamma_u, reversed, ACR's reported top-1)
    "cifar10_lt_n500_acr": (100, False, 81.6),
    "cifar10_lt_n500_uniform_acr": (1, False, 92.1),
    "cifar10_lt_n500_reversed_acr": (100, True, 85.0),
}


@pytest.mark.parametrize("name", sorted(ACR_PROTOCOL))
def test_acr_on_its_own_protocol(name):
    gamma_u, reverse, published = ACR_PROTOCOL[name]
    config = experiments.get_experiment(name)
    data = config.data
    assert (data.dataset, data.split_protocol, data.num_valid_per_class) == ("cifar10", "acr", 0)
    assert (data.num_labeled_head, data.num_unlabeled_head, data.imbalance_labeled) == (500, 4000, 100)
    assert (data.imbalance_unlabeled, data.reverse_unlabeled) == (gamma_u, reverse)
    assert (data.labeled_batch_size, data.unlabeled_ratio) == (64, 1)  # ACR's mu = 1
    assert (config.model.depth, config.model.width, config.model.batch_norm_momentum) == (28, 2, 0.999)
    assert {key: value for key, value in dataclasses.asdict(config.algorithm).items() if value is not None} == {
        "name": "acr", "lr_schedule": "cosine", "decay_bias_and_norm": False, "ema_warmup": False,
        "ema_copy_batch_norm": True}
    assert (config.trainer.train_steps, config.trainer.eval_interval, config.trainer.median_window) == (250_000, 500, 20)
    assert experiments.get_entry(name).paper_top1 == published


@pytest.mark.parametrize("name, reverse, dist_temperature", [
    ("cifar10_lt_n1500_cpu", False, 1.5), ("cifar10_lt_n1500_reversed_cpu", True, 0.3)])
def test_cpu_experiments_reduce_the_paper_setting(name, reverse, dist_temperature):
    config = experiments.get_experiment(name)
    paper = experiments.get_experiment("cifar10_lt_n1500_reversed" if reverse else "cifar10_lt_n1500")
    data = config.data
    assert (data.source, data.data_dir) == ("folder", "data/cifar10_jpeg")
    assert (data.num_labeled_head, data.num_unlabeled_head, data.imbalance_labeled, data.imbalance_unlabeled,
            data.reverse_unlabeled) == (1500, 3000, 100, 100, reverse)
    assert (config.model.depth, config.model.width, data.labeled_batch_size, data.unlabeled_ratio) == (28, 1, 32, 2)
    assert (config.trainer.train_steps, config.algorithm.warmup_steps, config.trainer.median_window) == (
        2000, 1000, 4)
    assert (config.trainer.eval_interval, config.trainer.checkpoint_interval, config.trainer.eval_batches) == (
        250, 250, 0)
    assert config.algorithm.dist_temperature == dist_temperature
    # Everything else is the paper setting's.
    assert (config.algorithm.threshold, config.algorithm.queue_size, config.algorithm.ema_decay) == (
        paper.algorithm.threshold, paper.algorithm.queue_size, paper.algorithm.ema_decay)
    entry = experiments.get_entry(name)
    assert entry.paper_top1 is None
    assert f"| {name} | {entry.description} | - (" in experiments.experiment_table()
