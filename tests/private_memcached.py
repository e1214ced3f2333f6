"""A ``memcached`` of the tests' own on a free port (the Debian package, installed by .ci/run):
nothing else on the machine shares its keys."""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess

from polling import poll
from services import free_port, missing

#: Bound for the server to answer after a start: generous for a loaded 2-core machine.
START_WAIT = 20.0


class PrivateMemcached:
    def __init__(self) -> None:
        program = shutil.which("memcached")
        if program is None:
            missing("memcached is not installed: .ci/run installs the Debian package")
        self.port = free_port()
        # -U 0: no UDP; -m 64: MB of memory; -u: memcached refuses to run as root without it.
        self.proc = subprocess.Popen(
            [program, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64",
             "-u", "nobody"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        poll(self._answers, START_WAIT, f"memcached on port {self.port}")

    @property
    def url(self) -> str:
        return f"cache+memcached://127.0.0.1:{self.port}/"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"version\r\n")
                return sock.recv(64).startswith(b"VERSION")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(START_WAIT)


_session: list[PrivateMemcached] = []


def session_memcached() -> PrivateMemcached:
    """One server for the test process, started on first use and stopped at exit."""
    if not _session:
        server = PrivateMemcached()
        atexit.register(server.stop)
        _session.append(server)
    return _session[0]
