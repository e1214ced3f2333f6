"""Real Celery and caraway on one wire: the shared task modules, the wires, worker processes.

The tasks live in one template written twice into a temporary folder, once importing
``celery`` and once ``caraway``, so both sides register the same names (``interop.add``,
``interop.fail``, ``interop.echo``, ``interop.stamps``, ``interop.slow``,
``interop.slow_late``). The custom exception lives in a third module both import, so either
side can rebuild it by name.

Every worker is a subprocess with its output in a log file; waits are bounded, workers are
killed at teardown, and a failing test prints the logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from polling import poll
from services import delete_redis_prefixed, rabbitmq_vhost, require

T = TypeVar("T")

#: Bound for anything that normally takes milliseconds (a loaded 2-core CI machine).
WAIT = 20.0
#: Redis database of the interop tests (the key prefix isolates each session within it).
REDIS_DB = 11
#: Lease of unacked messages on Redis, the same on both sides (docs/celery-wire.md §3.7): short, so
#: the kill story finishes quickly, but longer than any task here, so nothing is restored twice.
VISIBILITY_TIMEOUT = 4
BIN = Path(sys.executable).parent

ERRORS_SOURCE = '''
class QuotaExceeded(Exception):
    """Raised by interop.fail; both sides import it by this module's name."""
'''

TASKS_SOURCE = '''
"""The interop tasks, for {lib}: configured from INTEROP_* variables when run by a worker."""
import json
import os
import time
import uuid

from {lib} import Celery
from interop_errors import QuotaExceeded

LIB = "{lib}"


def build(broker, backend, transport=None, result_transport=None, markers=None):
    app = Celery("interop", broker=broker, backend=backend)
    app.conf.update(
        broker_transport_options=transport or {{}},
        result_backend_transport_options=result_transport or {{}},
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )

    def mark(kind, tag, n):
        if markers:
            name = f"{{kind}}.{{tag}}.{{n}}.{{LIB}}.{{os.getpid()}}.{{uuid.uuid4().hex}}"
            with open(os.path.join(markers, name), "w") as fh:
                fh.write(LIB)

    # shared=False: Celery's default would add every build's tasks to every app in a process.
    @app.task(name="interop.add", shared=False)
    def add(x, y):
        return x + y

    @app.task(name="interop.tsum", shared=False)
    def tsum(values):
        return {{"sum": sum(values), "by": LIB}}

    @app.task(name="interop.fail", shared=False)
    def fail(kind, message):
        if kind == "quota":
            raise QuotaExceeded(message, 7)
        raise ValueError(message)

    @app.task(name="interop.echo", shared=False)
    def echo(value, tag=None):
        if tag:
            mark("echo", tag, json.dumps(value))
        return {{"value": value, "by": LIB}}

    @app.task(name="interop.stamps", shared=False, bind=True)
    def stamps(self, value=None):
        names = sorted(self.request.stamped_headers or [])
        found = self.request.stamps or {{}}
        return {{"value": value, "names": names, "stamps": {{n: found.get(n) for n in names}},
                "by": LIB}}

    @app.task(name="interop.slow", shared=False)
    def slow(n, seconds, tag):
        mark("start", tag, n)
        time.sleep(seconds)
        mark("done", tag, n)
        return n

    @app.task(name="interop.slow_late", shared=False, acks_late=True)
    def slow_late(n, seconds, tag):
        mark("start", tag, n)
        time.sleep(seconds)
        mark("done", tag, n)
        return n

    return app


if os.environ.get("INTEROP_BROKER"):
    app = build(
        os.environ["INTEROP_BROKER"],
        os.environ["INTEROP_BACKEND"],
        json.loads(os.environ.get("INTEROP_TRANSPORT") or "{{}}"),
        json.loads(os.environ.get("INTEROP_RESULT_TRANSPORT") or "{{}}"),
        os.environ.get("INTEROP_MARKERS"),
    )
'''


def wait_until(predicate: Callable[[], T], timeout: float = WAIT, what: str = "condition") -> T:
    """``polling.poll`` with this suite's bound."""
    return poll(predicate, timeout, what)


def write_project(folder: Path) -> Path:
    """The two task modules and the shared exception module, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interop_errors.py").write_text(ERRORS_SOURCE)
    for lib in ("celery", "caraway"):
        (folder / f"{lib}_side.py").write_text(TASKS_SOURCE.format(lib=lib))
    return folder


@dataclass
class Wire:
    """One broker and result backend both sides use, with what isolates this session."""

    name: str
    broker: str
    backend: str
    transport: dict[str, Any] = field(default_factory=dict)
    result_transport: dict[str, Any] = field(default_factory=dict)

    def env(self, markers: Path) -> dict[str, str]:
        return {
            "INTEROP_BROKER": self.broker,
            "INTEROP_BACKEND": self.backend,
            "INTEROP_TRANSPORT": json.dumps(self.transport),
            "INTEROP_RESULT_TRANSPORT": json.dumps(self.result_transport),
            "INTEROP_MARKERS": str(markers),
        }


@contextmanager
def redis_wire() -> Iterator[Wire]:
    """Redis db ``REDIS_DB`` with a fresh ``global_keyprefix``; only those keys are deleted."""

    host, port = require("redis")
    prefix = f"interop-{uuid.uuid4().hex[:10]}:"
    url = f"redis://{host}:{port}/{REDIS_DB}"
    options = {"global_keyprefix": prefix}
    transport = {**options, "visibility_timeout": VISIBILITY_TIMEOUT}
    try:
        yield Wire("redis", url, url, transport, options)
    finally:
        delete_redis_prefixed(prefix, dbs=(REDIS_DB,))


@contextmanager
def rabbitmq_wire() -> Iterator[Wire]:
    """A vhost created for the session (deleted after, with all in it); results over rpc://."""
    with rabbitmq_vhost("caraway-interop") as url:
        yield Wire("rabbitmq", url, "rpc://")


def close_celery_app(app: Any) -> None:
    """Close the connections a Celery client app holds of its own: its result backend's
    (Redis client, rpc:// consumer). Celery's ``app.close()`` leaves them to the garbage
    collector, which pytest reports as unraisable. Its broker connection and producer pools
    are kombu's, shared by every app on the same URL (``kombu.pools``): closing them here
    would break the apps still using them."""
    backend = app._backend
    if backend is not None:
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None and getattr(consumer, "_connection", True) is not None:
            with contextlib.suppress(Exception):  # never started: nothing of its own to close
                consumer.stop()
        client = backend.__dict__.get("client")
        if client is not None and hasattr(client, "connection_pool"):  # redis-py's
            client.close()
            client.connection_pool.disconnect()
    app.close()


def die_with_parent() -> None:
    """Run in the child before exec: on Linux it gets SIGKILL when the test process dies, so
    a pytest killed by a timeout leaves no worker behind (PR_SET_PDEATHSIG survives exec)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class WorkerProcess:
    """A real ``celery`` or ``caraway`` worker on ``queues``, logging to a file."""

    def __init__(self, kind: str, project: Path, wire: Wire, markers: Path, queues: str) -> None:
        self.kind = kind
        self.name = f"{kind}-{uuid.uuid4().hex[:6]}"
        self.log = project / f"{self.name}.log"
        env = {**os.environ, **wire.env(markers), "PYTHONPATH": str(project)}
        env.pop("CARAWAY_HOME", None)
        if kind == "celery":
            # Celery's best single-process form; gossip, mingle and heartbeats only add noise.
            args = [str(BIN / "celery"), "-A", "celery_side", "worker", "-P", "solo",
                    "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        else:
            args = [str(BIN / "caraway"), "-A", "caraway_side", "worker", "-P", "threads",
                    "-c", "2"]  # fmt: skip
        args += ["-Q", queues, "-n", f"{self.name}@%h", "-l", "INFO"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                args, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Both workers log ``<node> ready.`` once they consume."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.output()}")
            return " ready." in self.output()

        wait_until(ready, timeout, f"{self.name} to be ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT)

    def stop(self) -> None:
        """Warm shutdown, then a kill if it takes too long (an idle Celery solo worker on
        RabbitMQ takes over 10 s to notice SIGTERM; the tests are done with it by then)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()


class Workers:
    """Starts workers and makes sure each one is gone at the end, printing logs on failure."""

    def __init__(self, project: Path, wire: Wire, markers: Path) -> None:
        self.project, self.wire, self.markers = project, wire, markers
        self.started: list[WorkerProcess] = []

    def start(self, kind: str, queues: str, ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(kind, self.project, self.wire, self.markers, queues)
        self.started.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def logs(self) -> str:
        return "\n".join(f"===== {w.name} =====\n{w.output()}" for w in self.started)

    def stop_all(self) -> None:
        """SIGTERM to every worker at once, then one shared 1.5 s wait before the kills (one
        wait per worker added up to 3 s for each idle Celery worker on RabbitMQ)."""
        running = [w for w in self.started if w.proc.poll() is None]
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 1.5
        for worker in running:
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()


def read_markers(folder: Path, kind: str, tag: str) -> list[tuple[str, str]]:
    """``(n, lib)`` of each marker of ``kind`` left by tasks tagged ``tag``."""
    found = []
    for path in folder.glob(f"{kind}.{tag}.*"):
        _, _, n, lib, _pid, _ = path.name.split(".")
        found.append((n, lib))
    return found
