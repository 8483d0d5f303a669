"""One writer per run directory: an exclusive lock on ``<model_dir>/run.lock``.

A training run holds the lock from before its first write until it ends. A second process
asking for it is refused at once with ``RunDirLockedError`` naming the holder (host, PID,
start time, as recorded in the file). The lock is a kernel file lock (``flock``): it is
released by the kernel when its holder dies, however it dies, so a lock left behind by a
killed run is stale by construction; the next run takes it over and says so.

The file itself stays (emptied on a clean exit): deleting a lock file while another
process waits on it could let two processes lock two different files. On a filesystem
without file locks (some network/FUSE mounts) the record is used alone: it is stale when
it names a process of this host that no longer exists; a record from another host is
honoured until that run ends or the file is removed by hand.

Multi-worker: only the chief takes the lock (the other workers write nothing there).
"""

import datetime
import errno
import fcntl
import json
import os
import socket

from daso_tf import io_utils
from daso_tf.training.model_dir import RunDirectoryError

LOCK_FILE = "run.lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunDirLockedError(RunDirectoryError):
    """Another live process holds the run directory."""


def _describe(holder):
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(since {holder.get('started', '?')})")


class RunDirLock:
    """The exclusive lock of a run directory; a context manager.

    Args:
        model_dir: the run directory (must exist).
        log: where the "taking over a stale lock" line goes.
    """

    def __init__(self, model_dir, log=print):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.log = log
        self._fd = None

    def _read_holder(self):
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            text = os.read(self._fd, 4096).decode("utf-8", "replace").strip()
            return json.loads(text) if text else None
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "started": "? (unreadable lock record)"}

    def acquire(self):
        """Takes the lock or raises RunDirLockedError; returns self."""
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                file_locks = True
            except BlockingIOError:
                raise self._locked_error(self._read_holder()) from None
            except OSError as error:
                if error.errno not in _NO_LOCKS:
                    raise
                file_locks = False
            previous = self._read_holder()
            if previous and not file_locks and not self._stale_without_file_locks(previous):
                raise self._locked_error(previous)
            if previous:
                self.log(f"taking over the stale lock {self.path} of {_describe(previous)}, which is no longer "
                         "running")
            self._write_record()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        return self

    def _stale_without_file_locks(self, holder):
        return holder.get("host") == socket.gethostname() and not io_utils.process_exists(holder.get("pid"))

    def _locked_error(self, holder):
        return RunDirLockedError(
            f"--model_dir={self.model_dir} is in use by another run: {_describe(holder)} holds {self.path}. "
            "Wait for it to finish, stop it, or use another --model_dir")

    def _write_record(self):
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, (json.dumps(record) + "\n").encode())
        os.fsync(self._fd)

    def release(self):
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # empty record: released cleanly
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass  # the kernel releases the lock when the descriptor closes anyway
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
        return False
