"""Servers the fault tests own and may kill: Redis, PostgreSQL, and a TCP proxy to RabbitMQ.

The shared servers of the machine are never touched: each private one runs on a free port
with its files in a folder of the test, and is killed at teardown whatever happened.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from private_redis import PrivateRedis
from services import free_port, missing

#: Bound for a server to start or stop: generous for a loaded 2-core machine.
SERVER_WAIT = 20.0

#: Seconds a Redis or SQLite message stays leased unrenewed (``visibility_timeout``).
LEASE = 6.0


def binary(name: str, pattern: str | None = None) -> str:
    """The path of a server program; missing is a skip on a laptop and a failure in CI."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(pattern or ""), reverse=True)), None)
    if found is None:
        missing(f"{name} is not installed: this fault test needs its own server")
    return found


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(SERVER_WAIT)


class PrivatePostgres:
    """A PostgreSQL cluster made by ``initdb`` in a folder of its own, on a free port.

    PostgreSQL refuses to run as root: then the cluster belongs to the ``postgres`` user
    and every program runs through ``runuser``. Its folder is made with ``mkdtemp`` (the
    pytest folders are private to root, so the ``postgres`` user could not enter them).
    """

    def __init__(self) -> None:
        self.bin = Path(binary("initdb", "/usr/lib/postgresql/*/bin/initdb")).parent
        self.as_root = os.geteuid() == 0
        if self.as_root and shutil.which("runuser") is None:
            missing("PostgreSQL cannot run as root and runuser is not installed")
        self.folder = Path(tempfile.mkdtemp(prefix="caraway-faults-pg-"))
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"db+postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
        self._run("pg_ctl", "start", "-D", str(self.data), "-w", "-t", "30", "-l",
                  str(self.folder / "server.log"), "-o", options)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-w", "-t", "30", "-m", mode)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def redis_conf(server: PrivateRedis, lease: float = LEASE, **conf: Any) -> dict[str, Any]:
    """Settings for a project on ``server``. The lease (``visibility_timeout``) is short,
    so that a message nobody acknowledged comes back, and is counted, within the test."""
    return {
        "broker_url": f"{server.url}/0",
        "broker_transport_options": {"visibility_timeout": lease},
        **conf,
    }


def redis_empty(server: PrivateRedis) -> Callable[[], bool]:
    """Whether the server holds no message, queued or unacked (False while it is down)."""

    def empty() -> bool:
        client = redis.Redis(port=server.port, socket_timeout=2)
        try:
            queued = sum(client.llen(key) for key in client.scan_iter(match="celery*"))
            return queued + client.hlen("unacked") == 0
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    return empty
