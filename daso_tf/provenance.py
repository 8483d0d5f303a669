"""What produced an artifact: daso_tf version, git commit (in a checkout), TF/Keras/Python.

Recorded in every run's ``params.yaml`` and ``results.json`` and in every exported SavedModel
(``assets.extra/daso_tf.json``), so a result can always be traced to the code that made it.
"""

import functools
import os
import platform
import subprocess

from daso_tf.version import __version__

PROVENANCE_KEY = "provenance"


@functools.lru_cache(maxsize=None)
def git_commit(path=None):
    """``(commit, dirty)`` of the git checkout holding ``path`` (default: this package), or
    ``(None, None)`` when it is not in one (an installed wheel) or git is unavailable."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        def git(where, *args):
            return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()

        top = git(path, "rev-parse", "--show-toplevel")
        # Only a checkout of daso_tf itself counts (not some repository the wheel sits in).
        if not os.path.isfile(os.path.join(top, "daso_tf", "version.py")):
            return None, None
        commit = git(top, "rev-parse", "HEAD")
        dirty = bool(git(top, "status", "--porcelain", "--untracked-files=no"))
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def provenance():
    """``{"daso_tf": ..., "git_commit": ..., "git_dirty": ..., "tensorflow": ..., "keras": ...,
    "python": ...}``; TensorFlow/Keras versions are read only if they are already imported or
    importable (this never fails)."""
    commit, dirty = git_commit()
    return {
        "daso_tf": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "tensorflow": _version_of("tensorflow"),
        "keras": _version_of("keras"),
        "python": platform.python_version(),
    }


def _version_of(module_name):
    try:
        from importlib import metadata

        return metadata.version(module_name)
    except Exception:  # not installed, or no distribution metadata
        return None
