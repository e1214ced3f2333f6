"""``--detach``: turn this process into a background daemon before the worker boots."""

from __future__ import annotations

import os


def detach(workdir: str | None = None, umask: int | None = None) -> None:
    """Return in a new session, detached from the terminal; the caller's process exits 0.

    Two forks (the classic recipe): the first lets the shell's process exit, ``setsid``
    drops the controlling terminal, the second makes sure the daemon can never take one
    again. Standard streams go to ``/dev/null``; the worker logs to its ``--logfile``.
    """
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    if workdir is not None:
        os.chdir(workdir)
    if umask is not None:
        os.umask(umask)
    devnull = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(devnull, stream)
    if devnull > 2:
        os.close(devnull)
