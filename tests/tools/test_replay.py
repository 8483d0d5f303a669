"""Step-by-step parity with the recorded reference training runs (shared/golden/*_trajectory_*.npz).

Each trajectory is replayed by the real command in a fresh process (the replay switches Keras
to a float64 policy) from a copy of the file that holds only the INPUTS, so the replay cannot
peek at the recorded results.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from daso_tf.tools import replay

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPECTED_KEYS = (
    "loss_x", "loss_u", "loss_align", "pseudo_labels", "mask", "linear_pseudo_labels",
    "online_logits_inference", "ema_logits_inference", "prototypes", "histogram_counts",
)


def _trajectories():
    from tests.conftest import GOLDEN_DIR

    return sorted(GOLDEN_DIR.glob("*_trajectory_*.npz"))


def _inputs_only_copy(source, destination, drop=()):
    with np.load(source) as data:
        kept = {k: data[k] for k in data.files if k not in EXPECTED_KEYS and k not in drop}
    np.savez(destination, **kept)
    return destination


def _close(actual, expected, tolerance):
    """|a - e| <= tol, absolute for |e| <= 1 and relative above."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return np.abs(actual - expected) <= tolerance * np.maximum(1.0, np.abs(expected))


def test_golden_trajectories_exist(golden_dir):
    assert sorted(golden_dir.glob("*_trajectory_*.npz")), f"no *_trajectory_*.npz in {golden_dir}"


@pytest.mark.slow
@pytest.mark.parametrize("trajectory", _trajectories(), ids=lambda p: p.stem)
def test_replay_matches_reference_step_by_step(trajectory, tmp_path):
    inputs_file = _inputs_only_copy(trajectory, tmp_path / "inputs.npz")
    output = tmp_path / "replay.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "daso_tf.tools.replay", "--trajectory", str(inputs_file), "--output", str(output),
         "--quiet"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    expected = np.load(trajectory)
    got = np.load(output)
    steps = int(expected["steps"])

    # Discrete outputs first: the first step whose pseudo-labels differ is where to look.
    for key in ("pseudo_labels", "mask"):
        assert got[key].shape == expected[key].shape, key
        same = (got[key] == expected[key]).all(axis=1)
        assert same.all(), f"{key} differ first at step {int(np.argmin(same))} of {steps}"
    for key in ("loss_x", "loss_u", "loss_align"):
        assert got[key].shape == (steps,), key
        ok = _close(got[key], expected[key], 1e-6)
        first = int(np.argmin(ok))
        assert ok.all(), (
            f"{key} differs first at step {first}: {got[key][first]!r} vs reference {expected[key][first]!r}"
        )
    np.testing.assert_array_equal(got["histogram_counts"], expected["histogram_counts"])
    assert _close(got["prototypes"], expected["prototypes"], 1e-6).all(), np.abs(
        got["prototypes"] - expected["prototypes"]).max()
    for key in ("online_logits_inference", "ema_logits_inference"):
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-3, err_msg=key)


def test_missing_trajectory_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"--trajectory .*nowhere\.npz.*no such file"):
        replay.main(["--trajectory", str(tmp_path / "nowhere.npz"), "--output", str(tmp_path / "out.npz")])


def test_trajectory_without_inputs_is_rejected(tmp_path, golden_dir):
    source = sorted(golden_dir.glob("*_trajectory_*.npz"))[0]
    broken = _inputs_only_copy(source, tmp_path / "broken.npz", drop=("u_strong", "queue_size"))
    with pytest.raises(SystemExit, match=r"lacks the key\(s\) queue_size, u_strong"):
        replay.main(["--trajectory", str(broken), "--output", str(tmp_path / "out.npz")])

    not_npz = tmp_path / "not.npz"
    not_npz.write_text("hello")
    with pytest.raises(SystemExit, match=r"not\.npz.*not a NumPy \.npz"):
        replay.main(["--trajectory", str(not_npz), "--output", str(tmp_path / "out.npz")])


def test_bad_arguments_are_rejected_before_any_work(tmp_path, golden_dir):
    source = sorted(golden_dir.glob("*_trajectory_*.npz"))[0]
    with pytest.raises(SystemExit, match=r"--output .*out\.txt.*\.npz"):
        replay.main(["--trajectory", str(source), "--output", str(tmp_path / "out.txt")])
    with pytest.raises(SystemExit, match=r"--steps must be in \[1, \d+\].*got 0"):
        replay.main(["--trajectory", str(source), "--output", str(tmp_path / "out.npz"), "--steps", "0"])

    inputs = replay.read_trajectory_inputs(source)
    assert set(inputs) >= set(replay.CONFIG_KEYS) | set(replay.BATCH_KEYS) | {"state_dict", "probe_images"}
    assert not set(inputs) & set(EXPECTED_KEYS)
    assert all(not key.startswith("w/") for key in inputs["state_dict"])

    with np.load(source) as data:
        content = {k: data[k] for k in data.files}
    content["u_weak"] = content["u_weak"][:, :3]
    misshaped = tmp_path / "misshaped.npz"
    np.savez(misshaped, **content)
    with pytest.raises(ValueError, match=r"u_weak has shape .*expected it to start with"):
        replay.read_trajectory_inputs(misshaped)
