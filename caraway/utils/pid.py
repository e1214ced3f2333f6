"""This process's id, read without a system call, and the resets a forked child runs.

``os.getpid()`` is a system call (glibc no longer caches it), and the hot path checks the
pid on every Redis command to notice a fork; on a loaded VM a system call costs microseconds.

A forked child shares every socket its parent opened: two processes writing on one
database or broker connection interleave their protocol (``connection in transaction status
INTRANS``). Each client that holds connections registers a reset with ``after_fork_in_child``;
the child runs them all before it runs anything else, so it opens its own connections and
never closes, or writes on, the parent's.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import ClassVar

__all__ = ["after_fork_in_child", "current_pid"]

logger = logging.getLogger("caraway")

Reset = Callable[[], None]


class _Pid:
    value = os.getpid()


class _Resets:
    """The registered resets; a bound method is held weakly, so registering keeps no client
    alive. Dead entries are pruned whenever the list has doubled since the last pruning."""

    refs: ClassVar[list[Callable[[], Reset | None]]] = []
    pruned_at = 16
    lock = threading.Lock()


def after_fork_in_child(reset: Reset) -> None:
    """Run ``reset`` in every child forked from now on (``os.fork``, prefork children)."""
    ref: Callable[[], Reset | None] = (
        weakref.WeakMethod(reset) if inspect.ismethod(reset) else (lambda: reset)
    )
    with _Resets.lock:
        _Resets.refs.append(ref)
        if len(_Resets.refs) >= 2 * _Resets.pruned_at:
            _Resets.refs = [r for r in _Resets.refs if r() is not None]
            _Resets.pruned_at = max(16, len(_Resets.refs))


def _in_child() -> None:
    _Pid.value = os.getpid()
    _Resets.lock = threading.Lock()  # another thread of the parent may have held it
    for ref in list(_Resets.refs):
        reset = ref()
        if reset is None:
            continue
        try:
            reset()
        except Exception:
            logger.exception("Resetting %r after fork failed", reset)


os.register_at_fork(after_in_child=_in_child)


def current_pid() -> int:
    """``os.getpid()``, as of the last fork."""
    return _Pid.value
