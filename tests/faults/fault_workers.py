"""Workers under fault, and the ledger that counts every task run by id.

The tasks write to a side channel that no fault can reach: one line per start and per end
(``start|end <task id> <pid> <time>``), appended with ``O_APPEND`` to a file in the test's
folder. Whatever the broker or the worker lost or repeated, the ledger tells: a task with no
``end`` is lost, a task with two ``start`` ran twice. Celery's promise with ``acks_late``
is that only tasks that were running when the fault struck may run twice; the ledger's
times tell which ones those were, so a prefetched message run twice is caught.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from polling import poll

#: The bound for work to resume after a fault: tasks sent once it is over end within this.
RESUME_WITHIN = 20.0

#: The bound for everything to be settled after a fault: a lease (at most 15 s) runs out,
#: the worker's orphan poll (every 5 s) finds what it held, and those tasks run again.
SETTLE = 40.0

#: The app the workers run; its settings come from ``fault_conf.json`` beside it, and
#: ``FAULT_BROKER_URL`` in the environment overrides the broker (a worker behind a proxy).
TASKS_SOURCE = """
import json
import os
import time
from pathlib import Path

from caraway import Celery

HERE = Path(__file__).resolve().parent
conf = json.loads((HERE / "fault_conf.json").read_text())
broker = os.environ.get("FAULT_BROKER_URL") or conf.pop("broker_url")
conf.pop("broker_url", None)
app = Celery("faultproj", broker=broker, backend=conf.pop("result_backend", None), **conf)


def note(event, task_id):
    line = f"{event} {task_id} {os.getpid()} {time.time():.6f}\\n".encode()
    fd = os.open(HERE / "ledger", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def run(request, seconds):
    note("start", request.id)
    time.sleep(seconds)
    note("end", request.id)
    return request.id


@app.task(name="fault.work", bind=True, acks_late=True)
def work(self, seconds):
    return run(self.request, seconds)


@app.task(name="fault.work_requeue", bind=True, acks_late=True, reject_on_worker_lost=True)
def work_requeue(self, seconds):
    return run(self.request, seconds)
"""


@dataclass(frozen=True)
class Event:
    kind: str  # "start" or "end"
    task_id: str
    pid: int
    at: float


class Ledger:
    """The side channel's file, read back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[Event]:
        """Every complete line (a line being written, with no newline yet, waits)."""
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text().split("\n")[:-1]:
            kind, task_id, pid, at = line.split()
            events.append(Event(kind, task_id, int(pid), float(at)))
        return events

    def ended(self) -> set[str]:
        return {e.task_id for e in self.events() if e.kind == "end"}

    def starts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.events():
            if e.kind == "start":
                counts[e.task_id] = counts.get(e.task_id, 0) + 1
        return counts

    def running(self, since: float, until: float) -> set[str]:
        """Tasks running at some instant of ``[since, until]``: started by ``until`` and
        not ended (by the same process) before ``since``."""
        events = self.events()
        ends = [e for e in events if e.kind == "end"]
        return {
            s.task_id
            for s in events
            if s.kind == "start"
            and s.at <= until
            and not any(
                e.task_id == s.task_id and e.pid == s.pid and s.at <= e.at < since for e in ends
            )
        }

    def running_now(self) -> dict[str, int]:
        """Task id -> pid of every run started and not ended yet."""
        open_runs: dict[tuple[str, int], int] = {}
        for e in self.events():
            key = (e.task_id, e.pid)
            open_runs[key] = open_runs.get(key, 0) + (1 if e.kind == "start" else -1)
        return {task_id: pid for (task_id, pid), count in open_runs.items() if count > 0}


@dataclass
class Figures:
    """What a scenario did, for ``docs/reliability.md``."""

    scenario: str
    sent: int
    lost: int
    twice: int
    running_at_fault: int
    recovery: float

    def show(self) -> None:
        print(f"FAULT-FIGURES {json.dumps(self.__dict__)}")


class FaultProject:
    """The fault tasks module in ``folder``, the app to send with, and its workers."""

    def __init__(self, folder: Path, conf: dict[str, Any]) -> None:
        self.folder = folder
        (folder / "fault_conf.json").write_text(json.dumps(conf))
        module_path = folder / "faultproj_tasks.py"
        module_path.write_text(TASKS_SOURCE)
        spec = importlib.util.spec_from_file_location(f"faultproj_{uuid.uuid4().hex}", module_path)
        assert spec is not None
        assert spec.loader is not None
        self.tasks: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.tasks)
        self.app = self.tasks.app
        self.ledger = Ledger(folder / "ledger")
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    # --- workers ---------------------------------------------------------------------------

    def spawn(self, pool: str, concurrency: int, env: dict[str, str] | None = None,
              **options: Any) -> subprocess.Popen[bytes]:  # fmt: skip
        """A worker process in a session of its own (teardown kills the whole group)."""
        extra = "".join(f", {name}={value!r}" for name, value in options.items())
        code = (
            "import faultproj_tasks as m; "
            f"m.app.Worker(pool={pool!r}, concurrency={concurrency}, setup_logging=True,"
            f" loglevel='INFO', install_signal_handlers=True{extra}).start()"
        )
        log = self.folder / f"worker-{len(self.procs)}.log"
        path = os.pathsep.join(filter(None, [str(self.folder), os.environ.get("PYTHONPATH")]))
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=self.folder,
                env={**os.environ, **(env or {}), "PYTHONPATH": path},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        return proc

    def log(self, index: int = -1) -> str:
        return self.procs[index][1].read_text(errors="replace")

    def wait_ready(self, index: int = -1, timeout: float = 30.0) -> None:
        """Until the worker logs "ready." (it has connected and consumes)."""
        proc = self.procs[index][0]
        poll(
            lambda: proc.poll() is not None or " ready." in self.log(index),
            timeout,
            "the worker to be ready",
        )
        assert proc.poll() is None, f"the worker exited ({proc.returncode}):\n{self.log(index)}"

    def close(self) -> None:
        for proc, log in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            print(f"----- {log.name} (exit {proc.returncode}) -----")
            print(log.read_text(errors="replace")[-20000:])
        self.app.close()

    # --- load ------------------------------------------------------------------------------

    def send(self, count: int, task: str = "work") -> list[str]:
        """``count`` short tasks (50 to 200 ms each); their ids."""
        send = getattr(self.tasks, task).delay
        return [send(0.05 + (n % 4) * 0.05).id for n in range(count)]

    def wait_ended(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` runs have ended: the pool is busy, the prefetch window full."""
        poll(lambda: len(self.ledger.ended()) >= count, timeout, f"{count} tasks to end")

    def settle(self, ids: Sequence[str], broker_empty: Callable[[], bool]) -> None:
        """Until every task ended and the broker holds no message (so nothing is still to
        come back, e.g. after a lease expires). Returns at the bound too: the assertions
        that follow say what is missing."""
        wanted = set(ids)
        with contextlib.suppress(AssertionError):
            poll(
                lambda: wanted <= self.ledger.ended() and broker_empty(),
                SETTLE,
                "every task to end and the broker to be empty",
            )

    def resume(self, count: int = 10) -> tuple[float, list[str]]:
        """``count`` tasks sent now, and the seconds they took to end: the proof that no
        worker hangs (they must end within ``RESUME_WITHIN``)."""
        started = time.monotonic()
        ids = self.send(count)
        poll(
            lambda: set(ids) <= self.ledger.ended(),
            RESUME_WITHIN,
            f"{count} tasks sent after the fault to end (does the worker hang?)",
        )
        return time.monotonic() - started, ids


def check(project: FaultProject, ids: Sequence[str], fault: tuple[float, float],
          broker_empty: Callable[[], bool], scenario: str, recovery: float) -> Figures:  # fmt: skip
    """The promise of ``acks_late``, once everything has settled: nothing lost, only tasks
    running at the fault (some instant of the ``fault`` window, wall-clock times) ran
    twice, and no message is left behind in the broker to run again later."""
    project.settle(ids, broker_empty)
    ledger = project.ledger
    ended, starts = ledger.ended(), ledger.starts()
    running = ledger.running(*fault)
    lost = sorted(set(ids) - ended)
    twice = {task_id for task_id in ids if starts.get(task_id, 0) > 1}
    figures = Figures(scenario, len(ids), len(lost), len(twice), len(running), round(recovery, 1))
    figures.show()
    assert not lost, f"{len(lost)} of {len(ids)} task(s) lost: {lost[:10]}"
    not_running = sorted(twice - running)
    assert not not_running, (
        f"{len(not_running)} task(s) ran twice that were not running at the fault "
        f"(prefetched, or acked in vain): {not_running[:10]}"
    )
    assert broker_empty(), "messages stay queued or unacked after every task ended"
    return figures
