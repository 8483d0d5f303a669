"""Durable writes for every file and directory a run produces.

A write that is interrupted at any moment (exception, SIGKILL, power loss) leaves the
previous version of the target or the new one, never an empty or partial file:

1. the new content goes into a hidden temporary sibling (``.tmp-...``, same directory, so
   the rename below stays on one filesystem);
2. it is flushed and fsync'ed (file by file, then directory by directory for a tree);
3. it is renamed over the target (atomic on POSIX);
4. the parent directory is fsync'ed, so the rename itself survives a power loss.

On failure the temporary sibling is removed. A write that fails because the disk, the
quota or the process's file-size limit is full raises ``DiskFullError``, so that callers
can stop with one line instead of a traceback (``is_disk_full`` recognises the same
condition in TensorFlow errors, which carry no errno).

Everything here is plain Python (no TensorFlow), so run.py can use it before TF starts.
"""

import errno
import json
import os
import shutil
import uuid

from daso_tf.fault_injection import kill_point

TEMP_PREFIX = ".tmp-"
# ENOSPC: disk full; EDQUOT: quota exhausted; EFBIG: the file-size limit (ulimit -f) reached.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(OSError):
    """A write failed for lack of space: disk full, quota exhausted or file-size limit hit.

    ``str(error)`` is one line; ``path`` is what was being written, ``reason`` the system's
    words for it (e.g. "No space left on device").
    """

    def __init__(self, message, *, path=None, reason=None):
        super().__init__(message)
        self.path, self.reason = path, reason


def is_disk_full(error):
    """Whether ``error`` (OSError, TensorFlow error, anything) reports a full disk or limit."""
    if isinstance(error, DiskFullError):
        return True
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    return _disk_full_reason(error) is not None


def _disk_full_reason(error):
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return os.strerror(error.errno)
    text = str(error)
    return next((os.strerror(code) for code in DISK_FULL_ERRNOS if os.strerror(code) in text), None)


def disk_full_error(error, path):
    """``error`` as a one-line ``DiskFullError`` about writing ``path``."""
    if isinstance(error, DiskFullError):
        return error
    reason = _disk_full_reason(error) or str(error).splitlines()[0]
    if reason == os.strerror(errno.EFBIG):
        reason += f" (the process's file-size limit, ulimit -f, is {_file_size_limit()})"
    return DiskFullError(f"writing {path} failed: {reason}", path=path, reason=reason)


def _file_size_limit():
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):
        return "unknown"
    return "unlimited" if soft == resource.RLIM_INFINITY else format_bytes(soft)


def format_bytes(count):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024


def temp_sibling(path, purpose="tmp"):
    """A fresh hidden name next to ``path``: ``.tmp-<purpose>-<name>-<pid>-<random>``."""
    path = os.path.abspath(os.fspath(path))
    name = f"{TEMP_PREFIX}{purpose}-{os.path.basename(path)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.path.join(os.path.dirname(path), name)


def process_exists(pid):
    """Whether a process ``pid`` exists on this host (True when that cannot be told)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or an id we cannot interpret: assume alive
    return True


def remove_stale_temporaries(directory):
    """Deletes the ``temp_sibling`` leftovers in ``directory`` of processes that no longer exist.

    A write interrupted by SIGKILL cannot clean up after itself; the next process does.
    Temporaries of live processes (another run's write in flight) are left alone.
    """
    removed = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        parts = name.split("-")
        if not name.startswith(TEMP_PREFIX) or len(parts) < 4 or not parts[-2].isdigit():
            continue
        pid = int(parts[-2])
        if pid == os.getpid() or process_exists(pid):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            remove_quietly(path)
        removed.append(name)
    return removed


# ----------------------------------------------------------------------------- files


def write_atomic(path, data):
    """Writes ``data`` (str or bytes) to ``path`` durably and atomically; returns ``path``.

    Raises DiskFullError (the target untouched, no temporary file left) when space runs out.
    """
    path = os.fspath(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    temp = temp_sibling(path, "write")
    try:
        with open(temp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        kill_point(f"write:{os.path.basename(path)}")
        os.replace(temp, path)
        fsync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException as error:
        remove_quietly(temp)
        if is_disk_full(error):
            raise disk_full_error(error, path) from None
        raise
    return path


def write_json(path, payload):
    """``write_atomic`` of ``payload`` as indented JSON (NumPy scalars and arrays allowed)."""
    text = json.dumps(payload, indent=2, allow_nan=False, default=_json_default)
    return write_atomic(path, text + "\n")


def _json_default(value):
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # NumPy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


# ----------------------------------------------------------------------------- directories


def fsync_directory(path):
    """fsyncs the directory entry list of ``path`` (makes renames and creations durable)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        # Some filesystems (and platforms) cannot fsync a directory; nothing more to do there.
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def sync_tree(path):
    """fsyncs every file below ``path``, then every directory, deepest first."""
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(root)


def move_into_place(temp_dir, final_dir, *, replace=False):
    """Makes the finished directory ``temp_dir`` appear as ``final_dir``, durably.

    The tree is fsync'ed, renamed, and the parent fsync'ed. An existing ``final_dir`` raises
    FileExistsError unless ``replace``; then it is moved aside first (a directory cannot be
    renamed over a non-empty one) and deleted once the new one is in place (put back if
    the rename fails).
    """
    sync_tree(temp_dir)
    parent = os.path.dirname(os.path.abspath(final_dir))
    if os.path.exists(final_dir):
        if not replace:
            raise FileExistsError(f"{final_dir} already exists")
        old_dir = temp_sibling(final_dir, "old")
        os.rename(final_dir, old_dir)
        try:
            os.rename(temp_dir, final_dir)
        except BaseException:
            os.rename(old_dir, final_dir)
            raise
        fsync_directory(parent)
        remove_tree(old_dir)
    else:
        os.rename(temp_dir, final_dir)
        fsync_directory(parent)
    return final_dir


def remove_tree(path):
    """Deletes the directory ``path`` so that it never appears half-deleted under its name.

    It is first renamed to a hidden temporary name (atomic), then removed; an interrupted
    removal leaves only a ``.tmp-`` directory that the owner cleans up later.
    """
    if not os.path.exists(path):
        return
    if not os.path.basename(os.path.normpath(path)).startswith(TEMP_PREFIX):
        trash = temp_sibling(path, "trash")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        path = trash
    shutil.rmtree(path, ignore_errors=True)


def directory_size(path):
    """Total size in bytes of the files below ``path`` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
