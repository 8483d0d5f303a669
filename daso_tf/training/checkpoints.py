"""Durable training checkpoints: the last few plus the best, in ``<model_dir>/checkpoints``.

Layout::

    checkpoints/ckpt-000001000/ckpt.index, ckpt.data-*     one per save, newest kept
    checkpoints/best-000000500/ckpt.*, best.json             best validation top-1
                                                             (best.json: {"step", "valid_top1"})

A checkpoint (the best one with its ``best.json``) is written into a hidden temporary
directory, fsync'ed, and renamed into place (``io_utils.move_into_place``), so killing the
process or losing power at any moment leaves either the whole checkpoint or none of it;
hidden leftovers are deleted by the next save. Old checkpoints are renamed away before
they are deleted, so none is ever seen half-deleted. The checkpoint object
(``tf.train.Checkpoint(model=..., optimizer=...)``) holds everything needed for an exact
resume: weights, EMA weights, optimiser slots, the prototype queue, the pseudo-label
histogram and the step (the data position is a pure function of the step).

Restoring verifies a checkpoint before touching the model (every tensor is read, so
TensorFlow checks its checksum). ``restore_latest`` walks back from the newest checkpoint
to older ones when one is damaged (truncated, corrupted, a file missing), logging one
warning line per skipped checkpoint, and fails with one line only when none is usable.
A checkpoint newer than the one a run resumed from is an abandoned (damaged) one: the
resumed run deletes it (``prune``).

Multi-worker: every worker calls ``save`` (the write may involve collectives); only the
chief writes into ``checkpoints/``, the others write into a private temporary directory
that is deleted right away (TensorFlow's recommended pattern).
"""

import json
import os
import re
import shutil

from daso_tf import io_utils
from daso_tf.fault_injection import kill_point
from daso_tf.training.model_dir import RunDirectoryError

CHECKPOINT_PREFIX = "ckpt"
_LATEST = re.compile(r"^ckpt-(\d+)$")
_BEST = re.compile(r"^best-(\d+)$")
BEST_METADATA = "best.json"


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not hold the variables of the model built from the run's config."""


class DamagedCheckpointError(RunDirectoryError):
    """A checkpoint cannot be read (truncated, corrupted or incomplete)."""


class NoUsableCheckpointError(RunDirectoryError):
    """Checkpoints exist but every one of them is damaged."""


class CheckpointManager:
    """Saves and restores ``checkpoint`` durably, keeping ``max_to_keep`` plus the best.

    Args:
        checkpoint: a ``tf.train.Checkpoint``.
        directory: where checkpoints live (created on the first save).
        max_to_keep: how many of the most recent checkpoints to keep.
        is_chief: whether this process owns ``directory`` (multi-worker: only the chief).
        worker_id: a name for the private temporary directory of a non-chief worker.
        log: where warnings about skipped (damaged) checkpoints go.
    """

    def __init__(self, checkpoint, directory, *, max_to_keep=3, is_chief=True, worker_id="0", log=print):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1; got {max_to_keep}")
        self.checkpoint = checkpoint
        self.directory = directory
        self.max_to_keep = max_to_keep
        self.is_chief = is_chief
        self.worker_id = str(worker_id)
        self.log = log

    # ------------------------------------------------------------------ listing
    def _names(self):
        return os.listdir(self.directory) if os.path.isdir(self.directory) else []

    def _step_directories(self):
        """Steps of every ckpt-* directory, oldest first (incomplete ones included)."""
        return sorted(int(m.group(1)) for m in map(_LATEST.match, self._names()) if m)

    def checkpoint_steps(self):
        """Steps of the complete regular checkpoints (with their index), oldest first."""
        return [s for s in self._step_directories() if os.path.exists(f"{self.path_for(s)}.index")]

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
        """``{"step", "valid_top1", "path"}`` of the best checkpoint, or None.

        The best is the ``best-*`` directory with the highest recorded validation top-1;
        one without a readable ``best.json`` or ``ckpt.index`` is ignored (and pruned).
        """
        candidates = []
        for name in self._names():
            if not _BEST.match(name):
                continue
            path = os.path.join(self.directory, name, CHECKPOINT_PREFIX)
            try:
                with open(os.path.join(self.directory, name, BEST_METADATA)) as f:
                    info = json.load(f)
                info = {"step": int(info["step"]), "valid_top1": float(info["valid_top1"]), "path": path}
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if os.path.exists(f"{path}.index"):
                candidates.append(info)
        return max(candidates, key=lambda i: (i["valid_top1"], i["step"])) if candidates else None

    def size_estimate(self):
        """Bytes of the newest checkpoint on disk, or None when there is none."""
        step = self.latest_step
        return None if step is None else io_utils.directory_size(os.path.dirname(self.path_for(step)))

    # ------------------------------------------------------------------ writing
    def _write(self, final_dir, metadata=None, point="checkpoint"):
        """Writes the checkpoint (plus ``metadata`` as best.json) into ``final_dir`` durably."""
        if not self.is_chief:
            scratch = os.path.join(self.directory, f".worker-{self.worker_id}-scratch")
            self.checkpoint.write(os.path.join(scratch, CHECKPOINT_PREFIX))
            shutil.rmtree(scratch, ignore_errors=True)
            return None
        os.makedirs(self.directory, exist_ok=True)
        temp_dir = io_utils.temp_sibling(final_dir)
        try:
            self.checkpoint.write(os.path.join(temp_dir, CHECKPOINT_PREFIX))
            if metadata is not None:
                io_utils.write_json(os.path.join(temp_dir, BEST_METADATA), metadata)
            io_utils.sync_tree(temp_dir)
            kill_point(f"{point}:before_rename")
            # replace: the same step saved again (a re-run of a finished run, a damaged one).
            io_utils.move_into_place(temp_dir, final_dir, replace=True)
        except BaseException as error:
            shutil.rmtree(temp_dir, ignore_errors=True)
            if io_utils.is_disk_full(error):
                raise io_utils.disk_full_error(error, final_dir) from None
            raise
        return os.path.join(final_dir, CHECKPOINT_PREFIX)

    def save(self, step):
        """Saves the state as checkpoint ``step`` and prunes old ones; returns its path (chief)."""
        path = self._write(os.path.join(self.directory, f"ckpt-{int(step):09d}"))
        if self.is_chief:
            kill_point("checkpoint:before_prune")
            self.prune(int(step))
        return path

    def save_best(self, step, valid_top1):
        """Saves the state as the new best checkpoint (validation top-1 ``valid_top1``)."""
        metadata = {"step": int(step), "valid_top1": float(valid_top1)}
        path = self._write(os.path.join(self.directory, f"best-{int(step):09d}"), metadata, point="best")
        if self.is_chief:
            kill_point("best:before_cleanup")
            self._remove_other_best()
        return path

    def prune(self, current_step):
        """Keeps the newest ``max_to_keep`` checkpoints up to ``current_step`` and the best.

        Called after every save, and by a resumed run (a run killed between a save and its
        pruning left one too many). Checkpoints newer than ``current_step`` were left by an
        attempt the run could not resume from (damaged ones): deleted too.
        """
        keep = [s for s in self.checkpoint_steps() if s <= current_step][-self.max_to_keep:]
        for step in self._step_directories():
            if step not in keep:
                io_utils.remove_tree(os.path.dirname(self.path_for(step)))
        self._remove_other_best()

    def _remove_other_best(self):
        """Deletes every best-* directory but the best one, and leftovers of killed writes."""
        best = self.best_info()
        keep = None if best is None else os.path.basename(os.path.dirname(best["path"]))
        for name in self._names():
            if _BEST.match(name) and name != keep:
                io_utils.remove_tree(os.path.join(self.directory, name))
        io_utils.remove_stale_temporaries(self.directory)

    # ------------------------------------------------------------------ reading
    def verify(self, path):
        """Reads every tensor of the checkpoint at ``path``; DamagedCheckpointError if it cannot.

        Nothing is assigned to the model, so a damaged checkpoint leaves the state untouched.
        """
        if not os.path.exists(f"{path}.index"):
            raise DamagedCheckpointError(f"checkpoint {os.path.dirname(path)} is incomplete (no "
                                         f"{CHECKPOINT_PREFIX}.index)")
        import tensorflow as tf  # here: run.py imports this module before TensorFlow may start

        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)  # checks the stored checksum
        # Measured: truncated data -> IndexError, truncated or corrupted index -> OpError,
        # flipped data bytes -> DataLossError, missing shard -> OpError.
        except (tf.errors.OpError, IndexError, ValueError, OSError) as error:
            # One line, without TensorFlow's function-node prefix and the path we name anyway.
            reason = " ".join(re.sub(r"\{\{[^}]*\}\}", "", str(error)).split()).replace(f"{path} ", "")
            reason = reason or type(error).__name__
            if len(reason) > 200:
                reason = reason[:200] + "..."
            raise DamagedCheckpointError(f"checkpoint {os.path.dirname(path)} is unreadable ({reason})") from None

    def restore(self, path):
        """Restores ``path`` into the (built) checkpoint objects; every saved value must match.

        Raises DamagedCheckpointError (state untouched) when the checkpoint cannot be read,
        CheckpointMismatchError when it holds other variables than the model.
        """
        self.verify(path)
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
        """Restores the newest usable checkpoint; returns its step, or None when there is none.

        Damaged checkpoints are skipped, newest first, with one warning line each; when
        every checkpoint is damaged, NoUsableCheckpointError says which and why.
        """
        skipped = []
        for step in reversed(self._step_directories()):
            try:
                self.restore(self.path_for(step))
            except DamagedCheckpointError as error:
                self.log(f"warning: skipping {error}; trying an older checkpoint")
                skipped.append(str(error))
                continue
            return step
        if skipped:
            raise NoUsableCheckpointError(
                f"no usable checkpoint in {self.directory}: {'; '.join(skipped)}. Restore a checkpoint from a "
                "backup, or start the run afresh in another --model_dir")
        return None

    def drop_damaged_best(self):
        """Deletes the best checkpoint if it cannot be read (chief), so that a new one is saved.

        Returns the error message of the dropped checkpoint, or None.
        """
        best = self.best_info()
        if best is None or not self.is_chief:
            return None
        try:
            self.verify(best["path"])
        except DamagedCheckpointError as error:
            self.log(f"warning: dropping the best {error}; the next evaluation saves a new best")
            io_utils.remove_tree(os.path.dirname(best["path"]))
            return str(error)
        return None
