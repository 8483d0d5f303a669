"""daso_tf.training.base_run: what a cRT run checks about its base run before anything is written."""

import os

import pytest

from daso_tf.config import ConfigError, ExperimentConfig, apply_overrides, write_params
from daso_tf.training.base_run import check_base_run, final_checkpoint


def _config(**overrides):
    values = {"model.depth": "10", "model.width": "1", "trainer.train_steps": "8", **overrides}
    return apply_overrides(ExperimentConfig(name="tiny"), values)


def _run_dir(path, config, checkpoint_steps=()):
    """A run directory as a training run leaves it: params.yaml and complete checkpoints."""
    path.mkdir()
    write_params(config, str(path))
    for step in checkpoint_steps:
        checkpoint = path / "checkpoints" / f"ckpt-{step:09d}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "ckpt.index").write_text("")
    return path


def test_a_finished_base_run_with_the_same_split_is_accepted(tmp_path):
    base = _run_dir(tmp_path / "base", _config(), checkpoint_steps=(4, 8))
    assert final_checkpoint(str(base)) == str(base / "checkpoints" / "ckpt-000000008" / "ckpt")
    # the cRT stage may train longer, with other batches, from the same data on another mount
    crt = _config(**{"algorithm.name": "crt", "algorithm.base_run": str(base), "trainer.train_steps": "100",
                     "data.labeled_batch_size": "32", "data.data_dir": "/elsewhere"})
    check_base_run(crt, str(tmp_path / "crt"))
    assert not (tmp_path / "crt").exists()


@pytest.mark.parametrize("override, message", [
    ({"data.seed": "1"}, "data.seed (base run 0, this run 1)"),
    ({"data.num_labeled_head": "500", "data.imbalance_labeled": "150"},
     "data.num_labeled_head (base run 1500, this run 500), data.imbalance_labeled (base run 100.0, this run 150.0)"),
    ({"data.reverse_unlabeled": "true"}, "data.reverse_unlabeled (base run False, this run True)"),
    ({"model.depth": "16"}, "model.depth (base run 10, this run 16)"),
    ({"data.image_size": "16"}, "data.image_size (base run 32, this run 16)"),
])
def test_another_split_or_backbone_is_refused_naming_the_keys(tmp_path, override, message):
    base = _run_dir(tmp_path / "base", _config(), checkpoint_steps=(8,))
    crt = _config(**{"algorithm.name": "crt", "algorithm.base_run": str(base), **override})
    with pytest.raises(ConfigError) as error:
        check_base_run(crt, str(tmp_path / "crt"))
    assert str(error.value).startswith(f"algorithm.base_run={base}: the base run has another data split or backbone: ")
    assert message in str(error.value)


def test_missing_unfinished_or_self_base_runs_are_refused(tmp_path):
    crt = {"algorithm.name": "crt"}
    with pytest.raises(ConfigError, match=r"algorithm.base_run=None: learner 'crt' \(algorithm.name\) re-trains"):
        check_base_run(_config(**crt), str(tmp_path / "crt"))
    with pytest.raises(ConfigError, match="not a daso_tf run directory"):
        check_base_run(_config(**crt, **{"algorithm.base_run": str(tmp_path / "nowhere")}), str(tmp_path / "crt"))
    unfinished = _run_dir(tmp_path / "unfinished", _config(), checkpoint_steps=(4,))
    with pytest.raises(ConfigError, match=r"the run is not finished \(its latest checkpoint is step 4; its final "
                                          r"checkpoint is step 8, trainer.train_steps\)"):
        check_base_run(_config(**crt, **{"algorithm.base_run": str(unfinished)}), str(tmp_path / "crt"))
    own = _run_dir(tmp_path / "own", _config(), checkpoint_steps=(8,))
    with pytest.raises(ConfigError, match="is this run's own --model_dir"):
        check_base_run(_config(**crt, **{"algorithm.base_run": str(own)}), str(own))
    # other learners have no base run to check
    check_base_run(_config(**{"algorithm.name": "fixmatch"}), str(tmp_path / "fixmatch"))


def test_a_crt_run_with_its_own_checkpoint_resumes_without_its_base_run(tmp_path):
    config = _config(**{"algorithm.name": "crt", "algorithm.base_run": str(tmp_path / "deleted")})
    resumed = _run_dir(tmp_path / "crt", config, checkpoint_steps=(4,))
    check_base_run(config, str(resumed))
