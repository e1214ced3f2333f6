"""The demo app and its workload: what ``caraway demo`` runs against a real worker.

The same app can be served by hand::

    caraway -A caraway.cli.demo_app -b sqlite:///demo.sqlite3 worker -l INFO

``DemoRun`` starts that worker as a subprocess (the demo is the one command that does),
publishes the workload, follows the results and stops the worker warmly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from caraway import states
from caraway.app import Caraway
from caraway.config import ENVIRONMENT
from caraway.engines.registry import embedded_url

if TYPE_CHECKING:
    from caraway.result import AsyncResult
    from caraway.task import Task

app = Caraway("caraway.cli.demo_app")
# Extended results carry the retry count, so the summary can report retries.
app.conf.result_extended = True

#: Seconds before the flaky task's retry runs: long enough to be a real ETA message.
RETRY_DELAY = 0.05
#: Calls sent between two looks at the results.
SEND_BATCH = 100
#: Seconds a worker gets to finish its running tasks after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


@app.task
def add(x: int, y: int) -> int:
    """The fast one."""
    return x + y


@app.task
def nap(seconds: float) -> float:
    """Sleeps a little, as I/O-bound tasks do."""
    time.sleep(seconds)
    return seconds


@app.task(bind=True, max_retries=3)
def flaky(self: Task[Any, Any], value: int) -> int:
    """Fails its first attempt on purpose and succeeds on the retry."""
    if self.request.retries == 0:
        raise self.retry(countdown=RETRY_DELAY, exc=RuntimeError("first attempt fails"))
    return value


@app.task(bind=True)
def crunch(self: Task[Any, Any], steps: int) -> int:
    """Reports a PROGRESS state after each step, then returns the sum of squares."""
    total = 0
    for step in range(steps):
        total += step * step
        self.update_state(state="PROGRESS", meta={"done": step + 1, "total": steps})
        time.sleep(0.005)
    return total


@dataclass(frozen=True)
class Call:
    """One call of the workload and the value it must return."""

    task: Task[Any, Any]
    args: tuple[Any, ...]
    expected: Any
    options: dict[str, Any] = field(default_factory=dict)


def workload(count: int) -> list[Call]:
    """``count`` calls in a fixed mix; in every 20: 15 adds (2 of them with a countdown),
    2 naps and 1 crunch at priority 5, and 2 flaky calls that retry once.
    """
    calls: list[Call] = []
    for i in range(count):
        slot = i % 20
        if slot in (0, 10):
            calls.append(Call(add, (i, 1), i + 1, {"countdown": 0.1 + (i % 7) / 20}))
        elif slot in (13, 14):
            seconds = 0.002 + (i % 5) / 1000
            calls.append(Call(nap, (seconds,), seconds, {"priority": 5}))
        elif slot == 15:
            calls.append(Call(crunch, (4,), sum(s * s for s in range(4)), {"priority": 5}))
        elif slot in (16, 17):
            calls.append(Call(flaky, (i,), i))
        else:
            calls.append(Call(add, (i, i), 2 * i))
    return calls


@dataclass
class Summary:
    total: int
    finished: Counter[str] = field(default_factory=Counter)
    seen_on_the_way: Counter[str] = field(default_factory=Counter)
    wrong_values: int = 0
    retries: int = 0
    publish_seconds: float = 0.0
    wall_seconds: float = 0.0
    timed_out: bool = False
    worker_exit: int | None = None

    @property
    def ok(self) -> bool:
        """Every task succeeded with its expected value and the worker stopped cleanly."""
        return (
            self.finished[states.SUCCESS] == self.total
            and self.wrong_values == 0
            and not self.timed_out
            and self.worker_exit == 0
        )


class WorkerDied(RuntimeError):
    """The worker subprocess exited while the demo was waiting on it."""


class DemoRun:
    """One run: a fresh worker on ``path``, the workload, the results, the summary."""

    def __init__(self, path: Path, concurrency: int, pool: str) -> None:
        self.path = path.absolute()
        self.url = embedded_url(self.path)
        self.concurrency = concurrency
        self.pool = pool
        self.log_path = self.path.with_name(self.path.stem + "-worker.log")
        self.worker: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def worker_command(self) -> list[str]:
        return [
            sys.executable, "-m", "caraway", "-A", "caraway.cli.demo_app", "-b", self.url,
            "worker", "-P", self.pool, "-c", str(self.concurrency), "-l", "WARNING",
        ]  # fmt: skip

    def start_worker(self) -> None:
        # The demo runs on its own file whatever the environment names for the user's apps
        # ($CELERY_BROKER_URL and the like win over the configuration), here and in its worker.
        for variable in ENVIRONMENT.values():
            os.environ.pop(variable, None)
        app.conf.broker_url = self.url
        app.close()  # forget engines of an earlier run in this process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # The worker must import this very caraway, installed or not.
        source_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
        self._log = self.log_path.open("wb")
        # Its own session: Ctrl-C reaches the demo alone, which stops the worker warmly.
        self.worker = subprocess.Popen(
            self.worker_command(), stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip

    def drive(
        self,
        calls: list[Call],
        summary: Summary,
        deadline: float,
        on_progress: Callable[[int], None],
    ) -> None:
        """Send the calls in batches and poll their results between batches, until every
        result is ready or ``deadline`` (monotonic) passes; results arrive while sending.
        """
        backend = app.backend
        pending: dict[int, AsyncResult[Any]] = {}
        seen: set[tuple[int, str]] = set()
        sent = 0
        while sent < len(calls) or pending:
            self._check_worker()
            started = time.monotonic()
            if started > deadline:
                summary.timed_out = True
                return
            for index in range(sent, min(sent + SEND_BATCH, len(calls))):
                call = calls[index]
                pending[index] = call.task.apply_async(call.args, **call.options)
            sent = min(sent + SEND_BATCH, len(calls))
            summary.publish_seconds += time.monotonic() - started
            done = 0
            for index, result in list(pending.items()):
                meta = backend.get_task_meta(result.id)
                status = meta["status"]
                if status not in states.READY_STATES:
                    if status != states.PENDING and (index, status) not in seen:
                        seen.add((index, status))
                        summary.seen_on_the_way[status] += 1
                    continue
                del pending[index]
                done += 1
                summary.finished[status] += 1
                summary.retries += int(meta.get("retries") or 0)
                if status == states.SUCCESS and meta["result"] != calls[index].expected:
                    summary.wrong_values += 1
            if done:
                on_progress(done)
            if sent == len(calls):
                # Polling costs the worker CPU: pause at least as long as a round took.
                time.sleep(max(0.02, time.monotonic() - started))

    def _check_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is not None:
            raise WorkerDied(
                f"the worker exited with code {self.worker.returncode}; its log:\n"
                + self.log_tail()
            )

    def stop_worker(self) -> int | None:
        """SIGTERM (a warm shutdown), wait up to ``STOP_TIMEOUT``, then kill; the exit code."""
        worker, self.worker = self.worker, None
        if worker is None:
            return None
        try:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            try:
                return worker.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
                return None
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
