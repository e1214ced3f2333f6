"""A worker killed during a chord's header (acks_late): the header tasks are redelivered,
each header result is counted once, and the body runs exactly once (Redis and SQLite)."""

from __future__ import annotations

import importlib.util
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import delete_redis_prefixed, require
from worker_support import WAIT, WorkerProject

from caraway import chord

SOURCE = """
import json
import os
import signal
import time
from pathlib import Path

from caraway import Celery, signals

HERE = Path(__file__).resolve().parent
if os.environ.get("CHORDKILL_REDIS"):
    url, prefix = os.environ["CHORDKILL_REDIS"], os.environ["CHORDKILL_PREFIX"]
    app = Celery(
        "crashproj", broker=url + "/0", backend=url + "/1",
        broker_transport_options={"global_keyprefix": prefix, "visibility_timeout": 1},
        result_backend_transport_options={"global_keyprefix": prefix},
    )
else:
    app = Celery(
        "crashproj", broker=f"sqlite:///{HERE}/b.sqlite3",
        broker_transport_options={"visibility_timeout": 1},
    )


def mark(key):
    marks = HERE / "marks"
    marks.mkdir(exist_ok=True)
    with open(marks / key, "a") as f:
        f.write(json.dumps({"pid": os.getpid()}) + "\\n")
    return len((marks / key).read_text().splitlines())


@app.task(name="chordkill.part", acks_late=True)
def part(key, value):
    mark(key)
    if os.environ.get("CHORDKILL_FIRST"):  # the first worker: wait here until it is killed
        deadline = time.monotonic() + 30
        while not (HERE / "never").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return value


@app.task(name="chordkill.done_then_die", acks_late=True)
def done_then_die(key, value):
    mark(key)
    deadline = time.monotonic() + 10
    while not ((HERE / "marks" / "a").exists() and (HERE / "marks" / "b").exists()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return value


@signals.task_postrun.connect
def die_after_first_counted_part(sender=None, task_id=None, **kwargs):
    # After the header result is stored and counted, before the ack: the worst moment.
    if sender is not None and sender.name == "chordkill.done_then_die":
        if os.environ.get("CHORDKILL_FIRST"):
            os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="chordkill.body")
def body(values):
    mark("body")
    return sorted(values)
"""


def _project(tmp_path: Path) -> WorkerProject:
    project = WorkerProject(tmp_path)
    project.app.close()
    project.module_path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location(
        f"crashproj_tasks_{uuid.uuid4().hex}", project.module_path
    )
    assert spec is not None
    assert spec.loader is not None
    project.tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(project.tasks)
    project.app = project.tasks.app
    return project


@pytest.fixture(params=["redis", "sqlite"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    host, port = require("redis")
    prefix = f"chordkill-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("CHORDKILL_REDIS", f"redis://{host}:{port}")
    monkeypatch.setenv("CHORDKILL_PREFIX", prefix)
    yield "redis"
    delete_redis_prefixed(prefix)


def test_a_worker_killed_in_a_chord_header_leaves_one_body_run(tmp_path: Path, engine: str) -> None:
    project = _project(tmp_path)
    tasks: Any = project.tasks
    try:
        first = project.spawn(pool="threads", concurrency=4, CHORDKILL_FIRST="1")
        project.ping(timeout=20)
        header = [tasks.part.s("a", 1), tasks.part.s("b", 2), tasks.done_then_die.s("dier", 3)]
        result = chord(header, tasks.body.s()).apply_async()
        first.wait(WAIT * 2)  # the "dier" kills it once its result is counted
        assert first.returncode == -signal.SIGKILL
        project.spawn(pool="threads", concurrency=4)

        assert result.get(timeout=30) == [1, 2, 3]
        assert len(project.marks("body")) == 1
        assert len(project.marks("dier")) == 2, "redelivered after it was counted"
        assert len(project.marks("a")) == len(project.marks("b")) == 2
        assert os.path.exists(tmp_path / "marks")
    finally:
        project.close()
        project.app.close()
