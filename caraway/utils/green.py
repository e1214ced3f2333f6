"""Monkey patching for ``caraway worker -P gevent|eventlet``, before anything else is imported.

gevent and eventlet make blocking code cooperative by replacing parts of the standard
library (socket, ssl, ``time.sleep``, threading, queues). That holds only for what is
imported after the patch: a socket class or an ``ssl`` module taken earlier stays blocking,
and gevent warns (``ssl`` patched late can even recurse). ``import caraway`` pulls in
``asyncio`` and with it ``ssl``, so, as Celery does, the ``caraway`` command reads the pool
from its own command line (``-P gevent``, ``-Pgevent``, ``--pool gevent``, ``--pool=gevent``;
the same for eventlet) and patches first:
``caraway/__init__`` imports this module before anything else, and it acts only when the
process is the ``caraway`` command running ``worker`` (the console script or
``python -m caraway``), never when a program merely imports caraway.

The ``worker_pool`` setting cannot be known that early (it is in the app's configuration,
read after caraway and the app are imported): a worker whose pool is gevent or eventlet in
a process that was not patched refuses to start and says to pass ``-P`` (or, in a program of
your own, to call ``gevent.monkey.patch_all()`` / ``eventlet.monkey_patch()`` first thing).

Only the standard library is imported here, so the patch comes before anything it affects.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: The pools that need the process patched before anything else.
PATCHED_POOLS = ("gevent", "eventlet")


def pool_in_argv(argv: Sequence[str]) -> str | None:
    """The pool ``-P``/``--pool`` names in ``argv`` (the last one, as click reads it)."""
    found = None
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        if arg in ("-P", "--pool"):
            found = next(args, None)
        elif arg.startswith("--pool="):
            found = arg.partition("=")[2]
        elif arg.startswith("-P"):
            found = arg[2:]
    return found


def running_the_command(argv0: str, orig_argv: Sequence[str]) -> bool:
    """Whether this process is the ``caraway`` command: its console script, or
    ``python [options] -m caraway`` (``sys.argv[0]`` is still ``-m`` while runpy imports
    the package, so the interpreter's own ``orig_argv`` tells)."""
    if os.path.basename(argv0) == "caraway":
        return True
    args = iter(orig_argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None) == "caraway"
        if arg.startswith("-m"):
            return arg == "-mcaraway"
        if arg in ("-W", "-X"):  # the interpreter options that take a separate value
            next(args, None)
        elif arg == "-c" or not arg.startswith("-"):
            return False  # a -c program or a script: what follows are its own arguments
    return False


def pool_to_patch_for(argv: Sequence[str], orig_argv: Sequence[str]) -> str | None:
    """The pool to patch for: the command runs ``worker`` with a pool of ``PATCHED_POOLS``."""
    if not argv or not running_the_command(argv[0], orig_argv) or "worker" not in argv[1:]:
        return None
    pool = pool_in_argv(argv[1:])
    return pool if pool in PATCHED_POOLS else None


def patch_for_the_command() -> None:
    """Patch the process when the command line asks for a gevent or eventlet worker.

    A missing library patches nothing: the worker then refuses the pool with the pip
    command that installs it.
    """
    pool = pool_to_patch_for(sys.argv, getattr(sys, "orig_argv", ()))
    if pool == "gevent":
        try:
            # Lazy, gevent is an optional extra, imported only when this worker needs it.
            from gevent import monkey
        except ImportError:
            return
        monkey.patch_all()
    elif pool == "eventlet":
        try:
            # Lazy, eventlet is an optional extra, imported only when this worker needs it.
            import eventlet
        except ImportError:
            return
        eventlet.monkey_patch()


patch_for_the_command()
