"""Messages a worker cannot run are set aside as dead letters, and the worker keeps serving."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, make_app

from caraway import serialization, states
from caraway.engines.base.broker import Outgoing
from caraway.exceptions import NotRegistered, Reject
from caraway.protocol import build_task_message


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
def test_undecodable_and_unknown_messages_become_dead_letters(
    broker: str, tmp_path: Path, start_worker: Any
) -> None:
    app = make_app(broker, f"dead-{broker}", tmp_path / "b.sqlite3", accept_content=["json"])

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    start_worker(app, pool="solo")

    # A body of [args, kwargs] without the third element (embed).
    short = build_task_message(add.name or "", str(uuid.uuid4()), [1, 2])
    short.body = serialization.json_dumps([[1, 2], {}])
    # A pickle body, while the worker accepts only JSON.
    pickled = build_task_message(add.name or "", str(uuid.uuid4()), [1, 2])
    pickled.body = pickle.dumps(([1, 2], {}, {}))
    pickled.content_type, pickled.content_encoding = "application/x-python-serialize", "binary"
    app.broker.publish([Outgoing(short, "celery"), Outgoing(pickled, "celery")])
    unknown = app.send_task("tests.worker.no_such_task", args=(1,))

    # A normal task sent after them still runs: the worker kept serving.
    assert add.delay(1, 2).get(timeout=WAIT) == 3

    dead = app.broker.dead_letters()
    assert [d.message.task_id for d in dead] == [short.task_id, pickled.task_id, unknown.id]
    assert [d.queue for d in dead] == ["celery"] * 3
    assert dead[0].reason.startswith("cannot decode: ")
    assert "3-element array" in dead[0].reason
    assert dead[1].reason.startswith("cannot decode: ")
    assert "'application/x-python-serialize'" in dead[1].reason
    assert "accept_content" in dead[1].reason
    assert dead[1].message.body == pickled.body  # kept as it came, to be inspected or replayed
    assert "unregistered task of type 'tests.worker.no_such_task'" in dead[2].reason

    # As Celery does on the wire: the unknown task is marked FAILURE with NotRegistered.
    assert unknown.state == states.FAILURE
    assert isinstance(unknown.result, NotRegistered)
    assert unknown.result.args == ("tests.worker.no_such_task",)
    # Undecodable messages have no trustworthy id to store a result under.
    assert app.AsyncResult(short.task_id or "").state == states.PENDING
    assert app.AsyncResult(pickled.task_id or "").state == states.PENDING
    assert app.broker.size("celery") == 0


#: Header or property values of the wrong type, as a buggy or hostile producer may send.
MALFORMED = {
    "timelimit-not-numbers": lambda m: m.headers.update(timelimit=["x", None]),
    "timelimit-not-a-list": lambda m: m.headers.update(timelimit=5),
    "retries-not-a-number": lambda m: m.headers.update(retries="abc"),
    "expires-not-a-time": lambda m: m.headers.update(expires="soon"),
    "priority-not-a-number": lambda m: m.properties.update(priority="high"),
    "compressed-garbage": lambda m: m.headers.update(compression="zlib"),
}


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
def test_messages_with_malformed_headers_become_dead_letters(
    broker: str, tmp_path: Path, start_worker: Any
) -> None:
    """None of them may stop the worker, or fail later in the pool (and be redelivered)."""
    app = make_app(broker, f"dead-headers-{broker}", tmp_path / "b.sqlite3")
    runs: list[int] = []

    @app.task(acks_late=True)
    def add(x: int, y: int) -> int:
        runs.append(x + y)
        return x + y

    start_worker(app, pool="solo")
    messages = []
    for spoil in MALFORMED.values():
        message = build_task_message(add.name or "", str(uuid.uuid4()), [1, 2])
        spoil(message)
        messages.append(message)
    app.broker.publish([Outgoing(message, "celery") for message in messages])

    assert add.delay(2, 3).get(timeout=WAIT) == 5
    dead = app.broker.dead_letters()
    assert [d.message.task_id for d in dead] == [m.task_id for m in messages]
    assert all(d.reason.startswith("cannot decode: ") for d in dead)
    assert runs == [5]
    assert app.broker.size("celery") == 0


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
def test_late_ack_tasks_that_reject_or_fail_unacked_become_dead_letters(
    broker: str, tmp_path: Path, start_worker: Any
) -> None:
    app = make_app(broker, f"dead-late-{broker}", tmp_path / "b.sqlite3")

    @app.task(acks_late=True)
    def refuse() -> None:
        raise Reject("bad input", requeue=False)

    @app.task(acks_late=True, acks_on_failure_or_timeout=False)
    def crash() -> None:
        raise ValueError("kept for a look")

    @app.task(acks_late=True)
    def crash_acked() -> None:
        raise ValueError("acked anyway")

    start_worker(app, pool="solo")
    refused, crashed, acked = refuse.delay(), crash.delay(), crash_acked.delay()
    with pytest.raises(ValueError, match="acked anyway"):
        acked.get(timeout=WAIT)  # the solo worker has handled the two before it

    dead = app.broker.dead_letters()
    assert [(d.message.task_id, d.reason) for d in dead] == [
        (refused.id, "rejected: 'bad input'"),
        (crashed.id, "failed: ValueError('kept for a look')"),
    ]
    assert refused.state == states.FAILURE  # rejected for good: Celery 5.7 stores a FAILURE
    assert isinstance(refused.result, Reject)
    assert crashed.state == states.FAILURE
    assert app.broker.size("celery") == 0


def test_a_body_that_expands_past_the_limit_becomes_a_dead_letter(
    tmp_path: Path, start_worker: Any
) -> None:
    """A zip bomb: 8 MiB of JSON in a few KiB of gzip, with the limit at 1 MiB."""
    app = make_app("sqlite", "bomb", tmp_path / "b.sqlite3", worker_max_decompressed_size=1 << 20)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    start_worker(app, pool="solo")
    bomb = build_task_message(add.name or "", str(uuid.uuid4()), [1, 2])
    bomb.body, bomb.headers["compression"] = serialization.compress(
        serialization.json_dumps([[" " * (8 << 20)], {}, {}]), "gzip"
    )
    assert len(bomb.body) < 64 << 10
    app.broker.publish([Outgoing(bomb, "celery")])

    assert add.delay(1, 2).get(timeout=WAIT) == 3  # sent after it: the worker kept serving

    [dead] = app.broker.dead_letters()
    assert dead.message.task_id == bomb.task_id
    assert dead.reason == (
        f"cannot decode: body larger than {1 << 20} bytes after decompression "
        "(application/x-gzip); raise worker_max_decompressed_size to accept it"
    )
    assert app.AsyncResult(bomb.task_id or "").state == states.PENDING


def test_the_decompressed_size_limit_is_generous_by_default() -> None:
    assert make_app("memory", "limit", Path()).conf.worker_max_decompressed_size == 100 << 20
