"""This process's id, read without a system call and kept current across forks.

``os.getpid()`` is a system call (glibc no longer caches it), and the hot path checks the
pid on every Redis command to notice a fork; on a loaded VM a system call costs microseconds.
"""

from __future__ import annotations

import os

__all__ = ["current_pid"]


class _Pid:
    value = os.getpid()


def _refresh() -> None:
    _Pid.value = os.getpid()


os.register_at_fork(after_in_child=_refresh)


def current_pid() -> int:
    """``os.getpid()``, as of the last fork."""
    return _Pid.value
