"""daso_tf.data.unlabeled_estimates: the reference estimates for every paper setting, estimate
files, DARP's target."""

import json

import numpy as np
import pytest

from daso_tf import experiments
from daso_tf.data import unlabeled_estimates
from daso_tf.data.unlabeled_estimates import (REFERENCE_ESTIMATES, load_estimate, reference_estimate_name,
                                              target_counts, unlabeled_matches_labeled)


def test_every_paper_setting_with_another_unlabeled_distribution_has_a_reference_estimate():
    names = {}
    for name in experiments.list_experiments():
        data = experiments.get_experiment(name).data
        if not unlabeled_matches_labeled(data):
            names[name] = reference_estimate_name(data)
    assert names["cifar10_lt_n1500_uniform"] == "cifar10_l_1500_100_ul_3000_1"
    assert names["cifar10_lt_n500_reversed"] == "cifar10_l_500_100_ul_4000_100_rev"
    assert names["stl10_lt_n150_g20"] == "stl10_l_150_20_ul_-1_-1"
    assert names["cifar10_lt_n1500_reversed_cpu"] == "cifar10_l_1500_100_ul_3000_100_rev"  # same setting, fewer steps
    assert sorted(set(names.values())) == sorted(REFERENCE_ESTIMATES)  # CIFAR-10 gamma_u = 1 / reversed, STL-10
    assert unlabeled_matches_labeled(experiments.get_experiment("cifar10_lt_n1500").data)
    for values in REFERENCE_ESTIMATES.values():  # published rounded to 3 decimals
        assert len(values) == 10 and sum(values) == pytest.approx(1.0, abs=6e-3)


def test_estimate_sources_and_errors(tmp_path):
    np.testing.assert_array_equal(load_estimate("stl10_l_450_10_ul_-1_-1"), REFERENCE_ESTIMATES["stl10_l_450_10_ul_-1_-1"])
    np.save(tmp_path / "q.npy", np.array([3.0, 1.0]))
    np.testing.assert_array_equal(load_estimate(str(tmp_path / "q.npy")), [3.0, 1.0])
    (tmp_path / "q.json").write_text(json.dumps({"estimate": [1, 2, 1]}))
    np.testing.assert_array_equal(load_estimate(str(tmp_path / "q.json")), [1.0, 2.0, 1.0])
    np.testing.assert_allclose(target_counts([1, 2, 1], 100), [25.0, 50.0, 25.0])
    (tmp_path / "bad.json").write_text(json.dumps({"estimate": [1, -2]}))
    (tmp_path / "broken.json").write_text("{")
    for source, message in ((str(tmp_path / "bad.json"), "non-negative"), (str(tmp_path / "broken.json"), "cannot be read"),
                            (str(tmp_path / "none.npy"), "not found"), ("cifar100_l_150_10_ul_300_1", "neither")):
        with pytest.raises(ValueError, match=message):
            unlabeled_estimates.load_estimate(source)
