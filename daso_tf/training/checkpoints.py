"""Atomic training checkpoints: the last few plus the best, in ``<model_dir>/checkpoints``.

Layout::

    checkpoints/ckpt-000001000/ckpt.index, ckpt.data-*     one per save, newest kept
    checkpoints/best-000000500/ckpt.*                        best validation top-1
    checkpoints/best.json                                    {"step": 500, "valid_top1": ...}

A checkpoint is written into a hidden temporary directory and renamed into place (a
rename is atomic on POSIX), so killing the process at any moment leaves either the whole
checkpoint or none of it; a dangling temporary directory is ignored and cleaned up by the
next save. The checkpoint object (``tf.train.Checkpoint(model=..., optimizer=...)``)
holds everything needed for an exact resume: weights, EMA weights, optimiser slots, the
prototype queue, the pseudo-label histogram and the step (the data position is a pure
function of the step).

Multi-worker: every worker calls ``save`` (the write may involve collectives); only the
chief writes into ``checkpoints/``, the others write into a private temporary directory
that is deleted right away (TensorFlow's recommended pattern).
"""

import json
import os
import re
import shutil

CHECKPOINT_PREFIX = "ckpt"
_LATEST = re.compile(r"^ckpt-(\d+)$")
_BEST = re.compile(r"^best-(\d+)$")
BEST_POINTER = "best.json"


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not hold the variables of the model built from the run's config."""


class CheckpointManager:
    """Saves and restores ``checkpoint`` atomically, keeping ``max_to_keep`` plus the best.

    Args:
        checkpoint: a ``tf.train.Checkpoint``.
        directory: where checkpoints live (created on the first save).
        max_to_keep: how many of the most recent checkpoints to keep.
        is_chief: whether this process owns ``directory`` (multi-worker: only the chief).
        worker_id: a name for the private temporary directory of a non-chief worker.
    """

    def __init__(self, checkpoint, directory, *, max_to_keep=3, is_chief=True, worker_id="0"):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1; got {max_to_keep}")
        self.checkpoint = checkpoint
        self.directory = directory
        self.max_to_keep = max_to_keep
        self.is_chief = is_chief
        self.worker_id = str(worker_id)

    # ------------------------------------------------------------------ listing
    def _steps(self, pattern):
        if not os.path.isdir(self.directory):
            return []
        steps = []
        for name in os.listdir(self.directory):
            match = pattern.match(name)
            if match and os.path.exists(os.path.join(self.directory, name, f"{CHECKPOINT_PREFIX}.index")):
                steps.append(int(match.group(1)))
        return sorted(steps)

    def checkpoint_steps(self):
        """Steps of the complete regular checkpoints, oldest first."""
        return self._steps(_LATEST)

    def path_for(self, step):
        return os.path.join(self.directory, f"ckpt-{step:09d}", CHECKPOINT_PREFIX)

    @property
    def latest_step(self):
        steps = self.checkpoint_steps()
        return steps[-1] if steps else None

    @property
    def latest_path(self):
        step = self.latest_step
        return None if step is None else self.path_for(step)

    def best_info(self):
        """``{"step": ..., "valid_top1": ..., "path": ...}`` of the best checkpoint, or None."""
        pointer = os.path.join(self.directory, BEST_POINTER)
        try:
            with open(pointer) as f:
                info = json.load(f)
        except (OSError, ValueError):
            return None
        path = os.path.join(self.directory, f"best-{info['step']:09d}", CHECKPOINT_PREFIX)
        if not os.path.exists(f"{path}.index"):
            return None
        info["path"] = path
        return info

    # ------------------------------------------------------------------ writing
    def _write_atomically(self, final_dir):
        """Writes the checkpoint into ``final_dir`` via a temporary directory + rename."""
        if not self.is_chief:
            scratch = os.path.join(self.directory, f".worker-{self.worker_id}-scratch")
            self.checkpoint.write(os.path.join(scratch, CHECKPOINT_PREFIX))
            shutil.rmtree(scratch, ignore_errors=True)
            return None
        os.makedirs(self.directory, exist_ok=True)
        tmp_dir = os.path.join(self.directory, f".tmp-{os.path.basename(final_dir)}-{os.getpid()}")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        self.checkpoint.write(os.path.join(tmp_dir, CHECKPOINT_PREFIX))
        if os.path.exists(final_dir):  # the same step saved again (e.g. a re-run of a finished run)
            trash = f"{tmp_dir}-old"
            os.rename(final_dir, trash)
            os.rename(tmp_dir, final_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp_dir, final_dir)
        return os.path.join(final_dir, CHECKPOINT_PREFIX)

    def save(self, step):
        """Saves the state as checkpoint ``step`` and prunes old ones; returns its path (chief)."""
        path = self._write_atomically(os.path.join(self.directory, f"ckpt-{int(step):09d}"))
        if self.is_chief:
            self._prune()
        return path

    def save_best(self, step, valid_top1):
        """Saves the state as the new best checkpoint (validation top-1 ``valid_top1``)."""
        previous = self.best_info()
        path = self._write_atomically(os.path.join(self.directory, f"best-{int(step):09d}"))
        if not self.is_chief:
            return None
        pointer = os.path.join(self.directory, BEST_POINTER)
        tmp = f"{pointer}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"step": int(step), "valid_top1": float(valid_top1)}, f)
        os.replace(tmp, pointer)
        if previous and previous["step"] != int(step):
            shutil.rmtree(os.path.dirname(previous["path"]), ignore_errors=True)
        return path

    def _prune(self):
        for step in self.checkpoint_steps()[:-self.max_to_keep]:
            shutil.rmtree(os.path.dirname(self.path_for(step)), ignore_errors=True)
        best = self.best_info()
        keep_best = None if best is None else f"best-{best['step']:09d}"
        for name in os.listdir(self.directory):
            stale_tmp = name.startswith(".tmp-") and not name.endswith(f"-{os.getpid()}")
            stale_best = _BEST.match(name) and name != keep_best
            if stale_tmp or stale_best:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    # ------------------------------------------------------------------ reading
    def restore(self, path):
        """Restores ``path`` into the (built) checkpoint objects; every saved value must match."""
        status = self.checkpoint.read(path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as error:
            first = str(error).split(":", 1)[0]
            raise CheckpointMismatchError(
                f"checkpoint {path} does not match the model built from params.yaml ({first}); it was "
                "written by another version of the code or another configuration") from None
        return status

    def restore_latest(self):
        """Restores the newest checkpoint; returns its step, or None when there is none."""
        step = self.latest_step
        if step is None:
            return None
        self.restore(self.path_for(step))
        return step

