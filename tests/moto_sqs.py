"""moto's server on a free port, the standard local SQS endpoint, for the kombu bridge's SQS
tests: one for the test process, started on first use and stopped at exit."""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys

from polling import poll
from services import free_port

#: Bound for the server to answer after a start: generous for a loaded 2-core machine.
START_WAIT = 30.0
#: kombu's SQS transport against it: plain HTTP, no long polls (fetch waits on its own).
TRANSPORT_OPTIONS = {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 0,
                     "polling_interval": 0.05}  # fmt: skip


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll(self._answers, START_WAIT, f"moto's server on port {self.port}")

    @property
    def url(self) -> str:
        """Celery's SQS spelling, with moto's fixed test credentials."""
        return f"sqs://testing:testing@127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(START_WAIT)


_session: list[MotoServer] = []


def session_moto() -> MotoServer:
    if not _session:
        server = MotoServer()
        atexit.register(server.stop)
        _session.append(server)
    return _session[0]
