"""Real worker processes for the remote-control tests, on Redis or RabbitMQ.

The project module ``remoteproj`` is written into a temporary folder; workers run it with
``caraway -A remoteproj worker`` and read the broker from ``REMOTE_BROKER`` (plus a Redis
key prefix in ``REMOTE_PREFIX``), so this process and the workers share one isolated space.
Tasks leave marker files (``marks/<tag>.<n>.<host>``) the tests read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from polling import poll

T = TypeVar("T")

WAIT = 15.0
BIN = Path(sys.executable).parent

PROJECT = """
import os
import time
from pathlib import Path

from caraway import Celery

HERE = Path(__file__).resolve().parent
prefix = os.environ.get("REMOTE_PREFIX")
options = {"global_keyprefix": prefix} if prefix else {}
app = Celery("remoteproj", broker=os.environ["REMOTE_BROKER"])
app.conf.update(
    broker_transport_options=options, worker_prefetch_multiplier=4,
    worker_pool_restarts=True,
)


def mark(tag, n):
    marks = HERE / "marks"
    marks.mkdir(exist_ok=True)
    name = f"{tag}.{n}.{os.environ.get('REMOTE_NODE', '?')}.{uuid4()}"
    (marks / name).write_text(repr(time.time()))


def uuid4():
    import uuid

    return uuid.uuid4().hex


@app.task(name="remote.add")
def add(x, y):
    return x + y


@app.task(name="remote.sleep")
def sleep(seconds, tag="", n=0):
    # Small steps: a terminate (an exception raised in this thread) lands between them.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    if tag:
        mark(tag, n)
    return seconds


@app.task(name="remote.stamp")
def stamp(tag, n):
    mark(tag, n)
    return n
"""


def wait_until(predicate: Callable[[], T], timeout: float = WAIT, what: str = "condition") -> T:
    """``polling.poll`` with this suite's bound."""
    return poll(predicate, timeout, what)


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Node:
    """One ``caraway worker`` process."""

    def __init__(self, root: Path, env: dict[str, str], name: str, *args: str) -> None:
        self.root = root
        self.hostname = f"{name}@remote"
        self.log = root / f"{name}-{uuid.uuid4().hex[:6]}.log"
        command = [str(BIN / "caraway"), "-A", "remoteproj", "worker", "-n", self.hostname,
                   "-l", "INFO", *args]  # fmt: skip
        full_env = {**os.environ, **env, "REMOTE_NODE": self.hostname, "PYTHONPATH": str(root)}
        full_env.pop("CARAWAY_HOME", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command, cwd=root, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self) -> Node:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.hostname} exited early:\n{self.output()}")
            return f"{self.hostname} ready." in self.output()

        wait_until(ready, 30.0, f"{self.hostname} to be ready")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


class Cluster:
    """The project folder, the client app and the worker processes on one broker."""

    def __init__(self, root: Path, broker: str, prefix: str | None) -> None:
        self.root = root
        (root / "remoteproj.py").write_text(PROJECT)
        self.env = {"REMOTE_BROKER": broker, **({"REMOTE_PREFIX": prefix} if prefix else {})}
        self.nodes: list[Node] = []
        saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            import importlib.util

            spec = importlib.util.spec_from_file_location(
                f"remoteproj_{uuid.uuid4().hex}", root / "remoteproj.py"
            )
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.module: Any = module
        self.app: Any = module.app

    def start(self, name: str, *args: str, ready: bool = True) -> Node:
        node = Node(self.root, self.env, name, *args)
        self.nodes.append(node)
        return node.wait_ready() if ready else node

    def marks(self, tag: str) -> list[tuple[int, str, float]]:
        """``(n, hostname, time)`` of each marker left by tasks tagged ``tag``."""
        folder = self.root / "marks"
        found = []
        for path in folder.glob(f"{tag}.*") if folder.exists() else ():
            _, n, host, _ = path.name.split(".", 3)
            text = path.read_text()
            if text:  # else still being written: seen on the next look
                found.append((int(n), host, float(text)))
        return sorted(found, key=lambda mark: mark[2])

    def logs(self) -> str:
        return "\n".join(f"===== {n.hostname} =====\n{n.output()}" for n in self.nodes)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        self.app.close()
