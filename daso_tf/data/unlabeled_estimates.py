"""Estimates of the unlabeled class distribution (DARP's target when gamma_l != gamma_u).

DARP (``daso_tf.algorithms.FixMatchDARP``) refines pseudo-labels towards a target number
of unlabeled samples per class. When the unlabeled set follows the labeled distribution
(gamma_l == gamma_u, not reversed) the reference uses the true counts; otherwise an
estimate q of the unlabeled class distribution, scaled to the size of the unlabeled set.

An estimate comes from

- a **reference estimate**: the reference's own files, one per paper setting with
  gamma_l != gamma_u (``REFERENCE_ESTIMATES``; named like the reference's files
  ``<dataset>_l_<N1>_<gamma_l>_ul_<M1>_<gamma_u>[_rev]``; the values as published, 3
  decimals, normalised). CIFAR-100 has none;
- an **estimate file**: the ``darp_estimate.json`` a ``darp_estim`` run writes into its
  model_dir (``{"estimate": [...], ...}``), or a NumPy ``.npy`` vector (the reference's
  ``.npyz`` files are ``.npy`` files).

Plain Python and NumPy (no TensorFlow): run.py checks these before anything is written.
"""

import json
import os

import numpy as np

ESTIMATE_FILE_SUFFIXES = (".json", ".npy", ".npyz")

# q per class (0..9), normalised, from the reference's darp_estim/*.npyz files.
REFERENCE_ESTIMATES = {
    "cifar10_l_1500_100_ul_3000_1": (.120, .122, .100, .051, .061, .225, .080, .065, .109, .067),
    "cifar10_l_1500_100_ul_3000_100_rev": (.125, .070, .021, .038, .045, .036, .066, .154, .197, .249),
    "cifar10_l_500_100_ul_4000_1": (.048, .140, .150, .129, .083, .084, .074, .120, .107, .065),
    "cifar10_l_500_100_ul_4000_100_rev": (.136, .205, .050, .036, .042, .045, .096, .134, .064, .191),
    "stl10_l_150_10_ul_-1_-1": (.001, .023, .197, .156, .051, .059, .115, .088, .252, .058),
    "stl10_l_150_20_ul_-1_-1": (.106, .141, .130, .024, .107, .031, .202, .112, .095, .052),
    "stl10_l_450_10_ul_-1_-1": (.122, .110, .126, .099, .088, .143, .107, .065, .094, .046),
    "stl10_l_450_20_ul_-1_-1": (.099, .167, .105, .038, .030, .171, .145, .091, .074, .080),
}


def _number(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def reference_estimate_name(data_config):
    """The reference's name for the setting of ``data_config`` (a ``DataConfig``), e.g.
    ``cifar10_l_1500_100_ul_3000_1``, whether or not an estimate exists for it."""
    name = (f"{data_config.dataset}_l_{data_config.num_labeled_head}_{_number(data_config.imbalance_labeled)}"
            f"_ul_{data_config.num_unlabeled_head}_{_number(data_config.imbalance_unlabeled)}")
    return name + ("_rev" if data_config.reverse_unlabeled else "")


def unlabeled_matches_labeled(data_config):
    """Whether the unlabeled set follows the labeled class distribution (gamma_l == gamma_u,
    not reversed): then the true unlabeled counts are DARP's target."""
    return (data_config.imbalance_labeled == data_config.imbalance_unlabeled
            and not data_config.reverse_unlabeled)


def load_estimate(source):
    """The estimate ``source`` names (a reference estimate or a file), as float64 [K].

    Raises ValueError (one line, naming ``source``) when it is none of those, cannot be
    read, or is not a vector of K >= 2 finite, non-negative values with a positive sum.
    """
    if source in REFERENCE_ESTIMATES:
        values = REFERENCE_ESTIMATES[source]
    elif not str(source).endswith(ESTIMATE_FILE_SUFFIXES):
        raise ValueError(f"{source!r} is neither a reference estimate ({', '.join(REFERENCE_ESTIMATES)}) "
                         f"nor an estimate file ({', '.join(ESTIMATE_FILE_SUFFIXES)})")
    elif not os.path.isfile(source):
        raise ValueError(f"estimate file {source} not found")
    else:
        try:
            if str(source).endswith(".json"):
                with open(source) as f:
                    values = json.load(f)["estimate"]
            else:
                with open(source, "rb") as f:
                    values = np.load(f, allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"estimate file {source} cannot be read: {error}") from None
    estimate = np.asarray(values, dtype="float64")
    if estimate.ndim != 1 or estimate.size < 2 or not np.isfinite(estimate).all() \
            or (estimate < 0).any() or estimate.sum() <= 0:
        raise ValueError(f"estimate {source}: expected a vector of >= 2 finite, non-negative values with a "
                         f"positive sum; got {np.array2string(estimate, precision=4)}")
    return estimate


def target_counts(estimate, num_unlabeled):
    """DARP's target: ``estimate`` scaled to ``num_unlabeled`` samples (float64 [K])."""
    estimate = np.asarray(estimate, dtype="float64")
    return float(num_unlabeled) * estimate / estimate.sum()
