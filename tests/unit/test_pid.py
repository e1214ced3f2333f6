"""``current_pid``: the process id without a system call, right after a fork too; and the
resets a forked child runs (``after_fork_in_child``)."""

from __future__ import annotations

import gc
import os
import weakref

from caraway.utils.pid import _Resets, after_fork_in_child, current_pid


def test_current_pid_is_the_process_id_in_the_parent_and_in_a_forked_child() -> None:
    assert current_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, b"%d %d" % (current_pid(), os.getpid()))
        os._exit(0)
    os.close(write)
    seen, actual = map(int, os.read(read, 64).split())
    os.close(read)
    os.waitpid(child, 0)
    assert seen == actual == child
    assert current_pid() == os.getpid() != child


class _Client:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        after_fork_in_child(self.reset)

    def reset(self) -> None:
        self.log.append(self.name)


def test_a_forked_child_runs_each_live_reset_and_the_registry_keeps_nothing_alive() -> None:
    log: list[str] = []
    kept, dropped = _Client("kept", log), _Client("dropped", log)
    gone = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert gone() is None  # registering held it weakly
    for _ in range(2 * _Resets.pruned_at + 1):  # enough dead entries to force a pruning
        _Client("churn", [])
    # Other tests' clients may still be registered and alive: bound by the live ones.
    live = sum(1 for ref in _Resets.refs if ref() is not None)
    assert len(_Resets.refs) < 2 * max(16, live)

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, ",".join(log).encode())
        os._exit(0)
    os.close(write)
    ran = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(child, 0)

    assert ran == "kept"
    assert kept.log == []  # the parent ran nothing
