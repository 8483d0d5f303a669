"""Named kill points: make the process SIGKILL itself at an exact moment (crash tests).

Random kills rarely land inside the few milliseconds of a checkpoint rename; these points
let a test kill a run exactly there. They do nothing unless ``DASO_KILL_AT`` is set:

    DASO_KILL_AT=checkpoint:before_rename        the first time that point is reached
    DASO_KILL_AT=checkpoint:before_prune@3       the third time
    DASO_KILL_AT=write:results.json@2,export:before_rename   several points

Points (see ``KILL_POINTS``): a checkpoint written and fsync'ed but not yet renamed into
place; renamed but older ones not yet pruned; the same two for the best checkpoint; a file
written by ``io_utils.write_atomic`` (``write:<file name>``) before its rename; an export
written before its rename into ``<model_name>/<version>``.
"""

import os
import signal

ENV_VAR = "DASO_KILL_AT"
KILL_POINTS = (
    "checkpoint:before_rename",
    "checkpoint:before_prune",
    "best:before_rename",
    "best:before_cleanup",
    "write:<file name>",
    "export:before_rename",
)
_reached = {}


def kill_point(name):
    """SIGKILLs this process if ``DASO_KILL_AT`` asks for point ``name`` at this occurrence."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    _reached[name] = _reached.get(name, 0) + 1
    for item in spec.split(","):
        point, _, occurrence = item.strip().partition("@")
        if point == name and _reached[name] == int(occurrence or 1):
            os.kill(os.getpid(), signal.SIGKILL)
