"""An overridden ``Task.__call__`` and a task's own ``Request`` hooks, on every pool.

Real worker processes; the tasks and hooks leave marks in files, so the prefork children
(and the supervisor, where Request hooks run) are seen too. Eager mode: tests/unit.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, WorkerProject, wait_until

from caraway.exceptions import TimeLimitExceeded

SOURCE = """
import asyncio
import json
import os
import time
from pathlib import Path

from caraway import Celery, Task
from caraway.exceptions import SoftTimeLimitExceeded
from caraway.worker.request import Request

HERE = Path(__file__).resolve().parent


def mark(key, **info):
    marks = HERE / "marks"
    marks.mkdir(exist_ok=True)
    with open(marks / key, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), **info}) + "\\n")


class Traced(Task):
    def __call__(self, *args, **kwargs):
        mark("call", id=self.request.id, task=self.name)
        return super().__call__(*args, **kwargs)


app = Celery("callproj", broker=f"sqlite:///{HERE}/b.sqlite3", task_cls=Traced)
# shared=False: the test process loads this module too, and its other apps must not adopt
# these tasks (``crashproj_tasks:Hooks`` is importable only in the worker's process).


@app.task(name="call.add", shared=False, bind=True)
def add(self, x, y):
    return [x + y, self.request.id]


@app.task(name="call.add_async", shared=False, bind=True)
async def add_async(self, x, y):
    await asyncio.sleep(0)
    return [x + y, self.request.id]


class Hooks(Request):
    def on_accepted(self, pid, time_accepted):
        super().on_accepted(pid, time_accepted)
        mark("hooks", hook="on_accepted", id=self.id, worker_pid=pid)

    def on_timeout(self, soft, timeout):
        mark("hooks", hook="on_timeout", id=self.id, soft=soft, timeout=timeout)

    def on_success(self, failed__retval__runtime, **kwargs):
        failed, retval, runtime = failed__retval__runtime
        mark("hooks", hook="on_success", id=self.id, failed=bool(failed), runtime=runtime,
             retval=retval if not failed else type(retval.exception).__name__)
        super().on_success(failed__retval__runtime, **kwargs)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        mark("hooks", hook="on_failure", id=self.id, return_ok=return_ok,
             exc=type(exc_info.exception).__name__, traceback=exc_info.traceback)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def on_retry(self, exc_info):
        mark("hooks", hook="on_retry", id=self.id, reason=repr(exc_info.exception.exc))


class Hooked(Task):
    Request = Hooks


@app.task(name="call.fine", shared=False, base=Hooked)
def fine():
    return "fine"


@app.task(name="call.fine_async", shared=False, base=Hooked)
async def fine_async():
    await asyncio.sleep(0)
    return "fine"


@app.task(name="call.boom", shared=False, base=Hooked)
def boom():
    raise KeyError("boom")


@app.task(name="call.again", shared=False, base=Hooked, bind=True, default_retry_delay=0)
def again(self):
    if self.request.retries == 0:
        raise self.retry(exc=ValueError("once more"), countdown=0)
    return "second"


@app.task(name="call.spin", shared=False, Request="crashproj_tasks:Hooks", soft_time_limit=0.3)
def spin(seconds):
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            pass
    except SoftTimeLimitExceeded:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass
    return "finished"
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[WorkerProject]:
    project = WorkerProject(tmp_path, SOURCE)
    try:
        yield project
    finally:
        project.close()
        project.app.close()


def marks_by_id(project: WorkerProject, key: str) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for mark in project.marks(key):
        by_id.setdefault(mark["id"], []).append(mark)
    return by_id


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork", "asyncio"])
def test_overridden_call_runs_once_per_task_with_its_request(
    project: WorkerProject, pool: str
) -> None:
    proc = project.spawn(pool=pool, concurrency=2)
    project.ping()
    tasks = project.tasks

    results = [tasks.add.delay(i, 1) for i in range(3)] + [tasks.add_async.delay(2, 2)]
    values = [result.get(timeout=WAIT) for result in results]

    assert values == [
        [1, results[0].id],
        [2, results[1].id],
        [3, results[2].id],
        [4, results[3].id],
    ]
    project.stop(proc, signal.SIGTERM)  # every mark is written once the worker is gone
    calls = Counter(mark["id"] for mark in project.marks("call"))
    assert {result.id: calls[result.id] for result in results} == {r.id: 1 for r in results}
    by_id = marks_by_id(project, "call")
    assert [by_id[r.id][0]["task"] for r in results] == ["call.add"] * 3 + ["call.add_async"]
    if pool == "prefork":  # __call__ ran in a child, not in the supervisor
        assert {by_id[r.id][0]["pid"] for r in results}.isdisjoint({proc.pid})


@pytest.mark.parametrize("pool", ["threads", "prefork", "asyncio"])
def test_request_hooks_run_in_the_worker_process(project: WorkerProject, pool: str) -> None:
    proc = project.spawn(pool=pool, concurrency=2)
    project.ping()
    tasks = project.tasks

    fine, boom, again = tasks.fine.delay(), tasks.boom.delay(), tasks.again.delay()
    fine_async = tasks.fine_async.delay()
    assert fine.get(timeout=WAIT) == fine_async.get(timeout=WAIT) == "fine"
    with pytest.raises(KeyError):
        boom.get(timeout=WAIT)
    assert again.get(timeout=WAIT) == "second"
    assert tasks.spin.delay(0.6).get(timeout=WAIT) == "finished"  # past its soft limit
    hard = tasks.spin.apply_async((30,), time_limit=0.8)
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=WAIT)

    wait_until(
        lambda: marks_by_id(project, "hooks")[hard.id][-1]["hook"] == "on_failure",
        what="the hard time limit's on_failure",
    )
    project.stop(proc, signal.SIGTERM)
    by_id = marks_by_id(project, "hooks")
    assert {mark["pid"] for marks in by_id.values() for mark in marks} == {proc.pid}
    hooks = {task_id: [mark["hook"] for mark in marks] for task_id, marks in by_id.items()}
    assert hooks[fine.id] == ["on_accepted", "on_success"]
    assert by_id[fine.id][1]["failed"] is False
    assert by_id[fine.id][1]["retval"] == "'fine'"  # a repr, as Celery's
    assert hooks[boom.id] == ["on_accepted", "on_success", "on_failure"]
    assert by_id[boom.id][1]["retval"] == by_id[boom.id][2]["exc"] == "KeyError"
    assert by_id[boom.id][2]["return_ok"] is True
    assert "raise KeyError" in by_id[boom.id][2]["traceback"]
    # Both runs of ``again`` share its id: the retry (its failed run goes on to on_failure
    # and on_retry) and the second run, which may start before the first one's hooks ran.
    assert Counter(hooks[again.id]) == Counter(
        on_accepted=2, on_success=2, on_failure=1, on_retry=1
    )
    [retried] = [mark for mark in by_id[again.id] if mark["hook"] == "on_retry"]
    assert retried["reason"] == "ValueError('once more')"
    assert hooks[fine_async.id] == ["on_accepted", "on_success"]
    known = {fine.id, fine_async.id, boom.id, again.id, hard.id}
    [spun] = [task_id for task_id in hooks if task_id not in known]
    assert hooks[spun] == ["on_accepted", "on_timeout", "on_success"]
    assert by_id[spun][1]["soft"] is True
    assert by_id[spun][1]["timeout"] == pytest.approx(0.3)
    assert hooks[hard.id][:2] == ["on_accepted", "on_timeout"]
    assert by_id[hard.id][1]["soft"] is True  # the soft limit first: the body catches it
    assert hooks[hard.id][2:4] == ["on_timeout"] + (
        ["on_failure"] if pool == "prefork" else ["on_success"]
    )
    assert by_id[hard.id][2]["soft"] is False
    assert by_id[hard.id][2]["timeout"] == pytest.approx(0.8)
    assert by_id[hard.id][-1]["hook"] == "on_failure"
    assert by_id[hard.id][-1]["exc"] == "TimeLimitExceeded"
    workers = {by_id[task_id][0]["worker_pid"] for task_id in (fine.id, fine_async.id)}
    if pool == "prefork":  # on_accepted names the child that runs it
        assert proc.pid not in workers
    else:
        assert workers == {proc.pid}
