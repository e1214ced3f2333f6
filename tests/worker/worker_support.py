"""Real workers against real brokers: helpers shared by ``tests/worker`` (fixtures: conftest).

Two ways to run a worker:

* in this process, in a daemon thread (``ThreadedWorker``; fixture ``start_worker``): fast,
  for everything that needs no crash. Tasks can then share ``threading`` events with the test.
* as a subprocess (``WorkerProject``; fixture ``worker_project``): for SIGKILL, SIGTERM and
  restart stories. The tasks live in a module written into ``tmp_path`` and leave marker
  files the test reads.

Every wait is bounded, and every worker started here is stopped (or killed) at teardown.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from polling import poll
from services import require

from caraway import Celery
from caraway.utils.time import FakeClock
from caraway.worker.worker import Worker

T = TypeVar("T")

#: Upper bound for anything that normally takes milliseconds: generous, so a loaded
#: 2-core CI machine does not turn slowness into failures.
WAIT = 10.0


def wait_until(predicate: Callable[[], T], timeout: float = WAIT, what: str = "condition") -> T:
    """``polling.poll`` with this suite's bound."""
    return poll(predicate, timeout, what)


# --- apps --------------------------------------------------------------------------------


def memory_app(main: str, **conf: Any) -> Celery:
    """An app on its own ``memory://`` store (stores are shared per name in a process)."""
    return Celery(
        main, broker=f"memory://{main}-{uuid.uuid4().hex}", backend="cache+memory://", **conf
    )


def sqlite_app(main: str, path: Path, **conf: Any) -> Celery:
    """An app on a SQLite file; with no backend set, results go to the same file."""
    return Celery(main, broker=f"sqlite:///{path}", **conf)


def make_app(kind: str, main: str, path: Path, **conf: Any) -> Celery:
    if kind == "memory":
        return memory_app(main, **conf)
    if kind == "sqlite":
        return sqlite_app(main, path, **conf)
    raise ValueError(kind)


# --- workers in a thread -------------------------------------------------------------------


class ThreadedWorker:
    """``app.Worker(...).start()`` in a daemon thread; errors surface in the test thread."""

    def __init__(self, app: Celery, **options: Any) -> None:
        options.setdefault("pool", "threads")  # in the test process: no forking by default
        self.worker = app.Worker(**options)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.start()
        except BaseException as exc:  # reported by start()/stop(), not lost in the thread
            self.error = exc

    def start(self, timeout: float = WAIT) -> ThreadedWorker:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.worker.ready.wait(0.01):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop(timeout=1.0)
                raise AssertionError(f"worker did not become ready: {self.error!r}")
        return self

    def stop(self, timeout: float = WAIT) -> None:
        self.worker.stop(warm=True)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker thread did not stop"
        if self.error is not None:
            raise AssertionError(f"worker failed: {self.error!r}") from self.error


@contextmanager
def autojump(clock: FakeClock, worker: Worker) -> Iterator[None]:
    """Inside the block, whenever ``worker`` holds a job (for its ETA or a rate-limit token),
    or its broker holds one of its messages for later (``broker.delayed``: memory, SQLite), jump
    ``clock`` to when the first is due, as Trio's autojump clock: "in 2 s" takes no real
    time, and the worker and broker still decide on their clock when a message may run."""
    stop = threading.Event()
    broker = worker.app.broker

    def jump() -> None:
        while not stop.wait(0.002):
            held = worker.consumer.held_jobs() if worker.consumer is not None else []
            due = [hold[0] for hold in [*held[:1], *broker.delayed(worker.queues, 1)]]
            if due and min(due) > clock.time():
                clock.advance(min(due) - clock.time())

    thread = threading.Thread(target=jump, name="test-autojump", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(WAIT)


# --- workers in a subprocess -----------------------------------------------------------------

#: The app a subprocess worker runs. Tasks leave one JSON line per run in ``marks/<key>``
#: and ``block`` waits for the test to create ``release-<key>`` (the cross-process event).
TASKS_SOURCE = """
import asyncio
import json
import os
import signal
import time
from pathlib import Path

from caraway import Celery, signals

HERE = Path(__file__).resolve().parent
app = Celery(
    "crashproj",
    broker=f"sqlite:///{HERE}/b.sqlite3",
    broker_transport_options={"visibility_timeout": 2},
)


@signals.worker_process_init.connect
def term_during_boot(sender=None, **kwargs):
    if os.environ.get("CRASHPROJ_TERM_DURING_BOOT"):
        os.kill(os.getpid(), signal.SIGTERM)


def mark(key, **info):
    marks = HERE / "marks"
    marks.mkdir(exist_ok=True)
    line = json.dumps({"pid": os.getpid(), "at": time.time(), **info})
    with open(marks / key, "a") as f:
        f.write(line + "\\n")
    return len((marks / key).read_text().splitlines())


def block(key, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (HERE / f"release-{key}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"release-{key} never came")
        time.sleep(0.01)


def _run_blocking_first_time(request, key):
    runs = mark(key, redelivered=bool((request.delivery_info or {}).get("redelivered")))
    if runs == 1:
        block(key)
    return runs


@app.task(name="crash.late", bind=True, acks_late=True)
def late(self, key):
    return _run_blocking_first_time(self.request, key)


@app.task(name="crash.late_requeue", bind=True, acks_late=True, reject_on_worker_lost=True)
def late_requeue(self, key):
    return _run_blocking_first_time(self.request, key)


@app.task(name="crash.early", bind=True)
def early(self, key):
    return _run_blocking_first_time(self.request, key)


@app.task(name="crash.hold")
def hold(key):
    mark(key)
    block(key)
    return key


@app.task(name="crash.stamp")
def stamp(key):
    mark(key)
    return time.time()


@app.task(name="crash.late_stamp", acks_late=True)
def late_stamp(key):
    mark(key)
    return key


@app.task(name="crash.pid")
def pid():
    return os.getpid()


@app.task(name="crash.spin")
def spin(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "finished"


@app.task(name="crash.soft", soft_time_limit=0.3)
def soft(key):
    from caraway.exceptions import SoftTimeLimitExceeded

    try:
        spin(30)
    except SoftTimeLimitExceeded:
        mark(key, cleaned=True)
        return "cleaned up"
    return "never interrupted"


@app.task(name="crash.soft_async", soft_time_limit=0.3)
async def soft_async(key):
    from caraway.exceptions import SoftTimeLimitExceeded

    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0)
        mark(key, cleaned=True)
        return "cleaned up"
    return "never interrupted"


@app.task(name="crash.nap")
async def nap(seconds):
    started = time.time()
    await asyncio.sleep(seconds)
    return [os.getpid(), started, time.time()]
"""


class WorkerProject:
    """A tasks module in ``tmp_path`` and the subprocess workers that run it."""

    def __init__(self, root: Path, source: str = TASKS_SOURCE) -> None:
        """``source``: the module's code (``TASKS_SOURCE`` or one alike: an ``app`` on the
        SQLite file ``b.sqlite3`` beside it)."""
        self.root = root
        self.module_path = root / "crashproj_tasks.py"
        self.module_path.write_text(source)
        # Loaded here under a unique name: task names are explicit, so they match the worker's.
        name = f"crashproj_tasks_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(name, self.module_path)
        assert spec is not None
        assert spec.loader is not None
        self.tasks: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.tasks)
        self.app: Celery = self.tasks.app
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(
        self,
        pool: str = "threads",
        concurrency: int = 2,
        options: dict[str, Any] | None = None,
        **env: str,
    ) -> subprocess.Popen[bytes]:
        """Start a worker process; returns at once (use ``ping`` to wait until it serves).

        ``options`` are more ``app.Worker`` keyword arguments (``max_tasks_per_child=1``).
        """
        extra = "".join(f", {name}={value!r}" for name, value in (options or {}).items())
        # It exits with the worker's code, as ``caraway worker`` does (1 after a cold shutdown).
        code = (
            "import crashproj_tasks as m; "
            f"w = m.app.Worker(pool={pool!r}, concurrency={concurrency}, setup_logging=True,"
            f" loglevel='INFO', install_signal_handlers=True{extra}); w.start(); "
            "raise SystemExit(w.exitcode)"
        )
        log = self.root / f"worker-{len(self.procs)}.log"
        path = os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, **env, "PYTHONPATH": path}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log))
        return proc

    def log(self, index: int) -> str:
        """What the ``index``-th worker process started by this project has logged so far."""
        return self.procs[index][1].read_text(errors="replace")

    def ping(self, timeout: float = WAIT) -> None:
        """Wait until some worker serves: a ``celery.ping`` sent now gets its answer."""
        assert self.app.send_task("celery.ping").get(timeout=timeout) == "pong"

    def marks(self, key: str) -> list[dict[str, Any]]:
        path = self.root / "marks" / key
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def wait_marks(self, key: str, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        return wait_until(
            lambda: (marks := self.marks(key)) and len(marks) >= count and marks,
            timeout,
            f"{count} run(s) of {key!r}",
        )

    def release(self, key: str) -> None:
        (self.root / f"release-{key}").touch()

    def query(self, sql: str) -> list[Any]:
        """Read the broker file directly, to see what the broker API does not show."""
        with closing(sqlite3.connect(self.root / "b.sqlite3")) as conn:
            return conn.execute(sql).fetchall()

    def messages_in_file(self) -> int:
        """Every message row left in the broker file, leased or not."""
        return int(self.query("SELECT count(*) FROM caraway_messages")[0][0])

    def lease_until(self, task_id: str) -> float:
        """When the lease on ``task_id``'s message ends (it must be leased)."""
        rows = self.query(
            "SELECT lease_until, headers FROM caraway_messages WHERE lease_until IS NOT NULL"
        )
        [until] = [until for until, headers in rows if json.loads(headers)["id"] == task_id]
        return float(until)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = WAIT) -> int:
        proc.send_signal(sig)
        return proc.wait(timeout)

    def close(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(WAIT)
            # Shown by pytest only when the test failed.
            print(f"----- {log.name} (exit {proc.returncode}) -----")
            print(log.read_text(errors="replace"))


#: The app of ``TASKS_SOURCE`` on Redis: broker and results under a test's own key prefix.
_SQLITE_APP = TASKS_SOURCE[TASKS_SOURCE.index("app = Celery(") : TASKS_SOURCE.index(")\n") + 2]
_REDIS_APP = """app = Celery(
    "crashproj", broker=os.environ["PREFORK_REDIS"] + "/0",
    backend=os.environ["PREFORK_REDIS"] + "/1",
    broker_transport_options={
        "global_keyprefix": os.environ["PREFORK_PREFIX"], "visibility_timeout": 2,
    },
    result_backend_transport_options={"global_keyprefix": os.environ["PREFORK_PREFIX"]},
    worker_prefork_children_fetch=True,
)
"""


def redis_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> WorkerProject:
    """``WorkerProject`` on the shared Redis (prefork children fetch there: the app sets
    ``worker_prefork_children_fetch``), under a key
    prefix of its own (``PREFORK_PREFIX``; the test deletes its keys)."""
    host, port = require("redis")
    monkeypatch.setenv("PREFORK_REDIS", f"redis://{host}:{port}")
    monkeypatch.setenv("PREFORK_PREFIX", f"prefork-{uuid.uuid4().hex[:10]}:")
    return WorkerProject(root, TASKS_SOURCE.replace(_SQLITE_APP, _REDIS_APP))
