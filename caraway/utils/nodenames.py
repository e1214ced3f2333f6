"""Worker node names (``name@host``) as Celery spells them."""

from __future__ import annotations

import os
import socket

__all__ = ["anon_nodename", "nodename", "nodesplit"]


def nodename(name: str, hostname: str) -> str:
    """``name@hostname``."""
    return f"{name}@{hostname}"


def nodesplit(name: str) -> tuple[str | None, str]:
    """``"w1@host"`` → ``("w1", "host")``; a bare host has no name part."""
    head, sep, host = name.partition("@")
    return (head, host) if sep else (None, head)


def anon_nodename(hostname: str | None = None, prefix: str = "gen") -> str:
    """The name of a worker nobody named: ``gen<pid>@<host>``, as Celery's test workers use."""
    return nodename(f"{prefix}{os.getpid()}", hostname or socket.gethostname())
