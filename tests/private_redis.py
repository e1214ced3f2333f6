"""A ``redis-server`` of the test's own, on a free port, that the test may kill and start
again; the machine's shared Redis is never touched."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import redis
from polling import poll
from services import free_port, missing

#: Bound for the server to answer after a start: generous for a loaded 2-core machine.
START_WAIT = 20.0


class PrivateRedis:
    """With a ``folder``, an append-only file synced on every write keeps what was
    acknowledged across a SIGKILL (what comes back after a restart is the truth); without
    one the server keeps nothing."""

    def __init__(self, folder: Path | None = None, port: int | None = None) -> None:
        program = shutil.which("redis-server")
        if program is None:
            missing("redis-server is not installed: this test needs a Redis of its own")
        self.program = program
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "no"]
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            persistence = ["--appendonly", "yes", "--appendfsync", "always", "--dir",
                           str(self.folder)]  # fmt: skip
        self.proc = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        try:
            poll(lambda: _pings(client), START_WAIT, f"redis-server on port {self.port}")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; only the append-only file survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(START_WAIT)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
        return False
