"""The fork server: a single-threaded copy of the worker that forks prefork children.

Forking the supervisor itself once its consumer, timer and pool threads run would copy
whatever lock another thread held at that instant (SQLite's, a client's): a child can then
hang forever on its first result write. The fork server is forked once, before any of those
threads and before the broker and backend connect, and forks every child after that from its
own quiet, single-threaded memory. It hands the supervisor each child's pipe (over a Unix
socket) and reports each child's exit status on a pipe of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable
from multiprocessing import Pipe, reduction
from multiprocessing.connection import Connection
from typing import NoReturn

from caraway.worker.pools.child import die_with_parent

logger = logging.getLogger("caraway.worker")

#: How often the fork server looks for children that exited, in seconds.
REAP_INTERVAL = 0.02
#: What ``Forker.exit_status`` returns when the fork server could not say.
UNKNOWN_STATUS = -255

StartChild = Callable[[Connection, int], NoReturn]


class Forker:
    """The supervisor's handle on the fork server; ``fork`` is safe from any thread."""

    def __init__(self, start_child: StartChild) -> None:
        self._start_child = start_child
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.pid = 0

    def start(self) -> None:
        ours, theirs = Pipe()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs, self._start_child)
        theirs.close()
        self._conn, self.pid = ours, pid

    def fork(self, index: int) -> tuple[int, Connection, int]:
        """A new child: its pid, its job pipe, and the fd its exit status will be written to."""
        assert self._conn is not None, "start() the fork server first"
        with self._lock:
            self._conn.send(index)
            pid: int = self._conn.recv()
            job_fd = reduction.recv_handle(self._conn)
            status_fd = reduction.recv_handle(self._conn)
        return pid, Connection(job_fd), status_fd

    def stop(self, wait: bool = True) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._conn.close()
        self._conn = None
        if wait:
            os.waitpid(self.pid, 0)


def exit_status(status_fd: int, timeout: float) -> int:
    """A child's exit status as ``subprocess`` reports it (-N: killed by signal N)."""
    try:
        ready, _, _ = select.select([status_fd], [], [], timeout)
        data = os.read(status_fd, 32) if ready else b""
    finally:
        os.close(status_fd)
    try:
        return int(data)
    except ValueError:
        return UNKNOWN_STATUS


def _serve(control: Connection, start_child: StartChild) -> NoReturn:
    code = 0
    try:
        die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        _fork_on_request(control, start_child)
    except BaseException:
        logger.exception("The prefork fork server failed")
        code = 1
    finally:
        os._exit(code)


def _fork_on_request(control: Connection, start_child: StartChild) -> None:
    status_pipes: dict[int, int] = {}  # child pid -> write end of its status pipe
    while True:
        if control.poll(REAP_INTERVAL):
            try:
                index = control.recv()
            except EOFError:  # the supervisor is gone; our children die with us
                return
            if index is None:
                _reap(status_pipes, block=True)
                return
            pid, job_end, status_end = _fork_child(control, status_pipes, start_child, index)
            control.send(pid)
            reduction.send_handle(control, job_end.fileno(), 0)
            reduction.send_handle(control, status_end, 0)
            job_end.close()
            os.close(status_end)
        _reap(status_pipes, block=False)


def _fork_child(
    control: Connection, status_pipes: dict[int, int], start_child: StartChild, index: int
) -> tuple[int, Connection, int]:
    ours, theirs = Pipe()
    status_read, status_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        control.close()
        ours.close()
        os.close(status_read)
        os.close(status_write)
        for fd in status_pipes.values():
            os.close(fd)
        start_child(theirs, index)
    theirs.close()
    status_pipes[pid] = status_write
    return pid, ours, status_read


def _reap(status_pipes: dict[int, int], block: bool) -> None:
    """Report each child that exited; with ``block``, wait for all of them."""
    while status_pipes:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_pipes.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):  # the supervisor no longer listens
                os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
            os.close(fd)
