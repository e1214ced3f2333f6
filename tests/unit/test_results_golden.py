"""Result metas against the golden vectors Celery 5.7 wrote to Redis (docs/celery-wire.md §5.3-5.4).

``build_meta`` must give the captured keys in the captured order, with equal values; only
``date_done`` differs (it is checked for its format: ISO-8601, UTC as ``+00:00``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, states
from caraway.engines.base.backend import TASK_KEY_PREFIX, Backend, Stored
from caraway.engines.base.exception_meta import exception_to_meta, meta_to_exception
from caraway.exceptions import (
    ChordError,
    MaxRetriesExceededError,
    NotRegistered,
    Retry,
    TaskRevokedError,
    TimeLimitExceeded,
)
from caraway.request import Context

DATE_DONE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


def _load(captures_dir: Path, name: str) -> Any:
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in (captures_dir / name).read_text().splitlines()]
    return json.loads((captures_dir / name).read_text())


def _worker_meta(captures_dir: Path, key: str) -> dict[str, Any]:
    meta: dict[str, Any] = _load(captures_dir, "redis_worker.json")[key]["value"]
    return meta


def _published_meta(captures_dir: Path, status: str) -> dict[str, Any]:
    """The first meta with ``status`` that Celery PUBLISHed on a ``celery-task-meta-*`` channel."""
    for record in _load(captures_dir, "redis_pubsub.jsonl"):
        meta = record.get("json")
        if record["channel"].startswith(TASK_KEY_PREFIX) and meta and meta["status"] == status:
            found: dict[str, Any] = meta
            return found
    raise AssertionError(f"no {status} meta published in the capture")


@pytest.fixture
def app() -> Iterator[Caraway]:
    app = Caraway("capapp", broker="memory://results-golden", backend="cache+memory://",
                  set_as_current=False)  # fmt: skip
    yield app
    app.close()


@pytest.fixture
def extended_app() -> Iterator[Caraway]:
    app = Caraway(
        "capapp",
        broker="memory://results-golden",
        backend="cache+memory://",
        result_extended=True,
        set_as_current=False,
    )
    yield app
    app.close()


def _assert_same_meta(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert list(ours) == list(theirs), "same keys in the same order"
    for key, expected in theirs.items():
        if key == "date_done":
            if expected is None:
                assert ours[key] is None
            else:
                assert DATE_DONE_RE.match(expected)
                assert DATE_DONE_RE.match(ours[key]), ours[key]
        else:
            assert ours[key] == expected, key


def _request(meta: dict[str, Any], **fields: Any) -> Context:
    """The request a worker would have had for the task that wrote ``meta``."""
    return Context(
        id=meta["task_id"],
        group=meta.get("group_id"),
        parent_id=meta.get("parent_id"),
        children=list(meta["children"] or []),
        **fields,
    )


# --- build_meta ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capture", "result"),
    [
        ("add_meta", 5),
        ("progress_final", {"done": 3}),
        ("flaky_meta", "ok after 1"),  # a retried task: parent_id is its own id
        ("link_parent_meta", 3),  # children lists the link callback
        ("link_child_meta", 3),
        ("replace_meta", 6),
        ("chord_body_meta", 3),  # group_id then parent_id
    ],
)
def test_success_meta_matches_capture(
    capture: str, result: Any, app: Caraway, captures_dir: Path
) -> None:
    theirs = _worker_meta(captures_dir, capture)

    ours = app.backend.build_meta(theirs["task_id"], result, states.SUCCESS, None, _request(theirs))

    _assert_same_meta(ours, theirs)


def test_group_member_and_chain_step_metas_match_capture(app: Caraway, captures_dir: Path) -> None:
    data = _load(captures_dir, "redis_worker.json")
    metas = [m["value"] for m in data["group_member_metas"] + data["chain_metas_last_to_first"]]

    for theirs in metas:
        ours = app.backend.build_meta(
            theirs["task_id"], theirs["result"], states.SUCCESS, None, _request(theirs)
        )
        _assert_same_meta(ours, theirs)


def test_failure_meta_matches_capture(app: Caraway, captures_dir: Path) -> None:
    theirs = _worker_meta(captures_dir, "fail_meta")

    ours = app.backend.build_meta(
        theirs["task_id"], ValueError("kaboom"), states.FAILURE, theirs["traceback"],
        _request(theirs),
    )  # fmt: skip

    _assert_same_meta(ours, theirs)
    assert ours["result"] == {
        "exc_type": "ValueError",
        "exc_message": ["kaboom"],
        "exc_module": "builtins",
    }


def test_progress_metas_match_capture(app: Caraway, captures_dir: Path) -> None:
    for theirs in _load(captures_dir, "redis_worker.json")["progress_states_seen"]:
        ours = app.backend.build_meta(
            theirs["task_id"], dict(theirs["result"]), "PROGRESS", None, _request(theirs)
        )
        _assert_same_meta(ours, theirs)
        assert ours["date_done"] is None


def test_retry_meta_matches_capture(app: Caraway, captures_dir: Path) -> None:
    theirs = _published_meta(captures_dir, states.RETRY)
    # The retry message is a child with the task's own id (docs/celery-wire.md §5.5).
    assert theirs["children"] == [[[theirs["task_id"], None], None]]

    ours = app.backend.build_meta(
        theirs["task_id"], KeyError("try-again"), states.RETRY, theirs["traceback"],
        _request(theirs),
    )  # fmt: skip

    _assert_same_meta(ours, theirs)


@pytest.mark.parametrize(
    ("capture", "reason"),
    [
        ("revoked_meta", "terminated"),
        ("expired_meta", "expired"),
        ("revoked_pending_meta", "revoked"),
    ],
)
def test_revoked_meta_matches_capture(
    capture: str, reason: str, app: Caraway, captures_dir: Path
) -> None:
    theirs = _worker_meta(captures_dir, capture)

    ours = app.backend.build_meta(
        theirs["task_id"], TaskRevokedError(reason), states.REVOKED, None, _request(theirs)
    )

    _assert_same_meta(ours, theirs)


def test_mark_as_revoked_stores_the_captured_meta(app: Caraway, captures_dir: Path) -> None:
    theirs = dict(_worker_meta(captures_dir, "revoked_meta"), task_id=str(uuid.uuid4()))

    app.backend.mark_as_revoked(theirs["task_id"], "terminated")

    _assert_same_meta(app.backend.get_task_meta(theirs["task_id"]), theirs)


def test_unknown_task_meta_matches_capture(app: Caraway, captures_dir: Path) -> None:
    theirs = json.loads(_load(captures_dir, "types_roundtrip.json")["unknown_task_raw_result"])

    ours = app.backend.build_meta(
        theirs["task_id"], NotRegistered("capapp.nonexistent"), states.FAILURE, None,
        _request(theirs),
    )  # fmt: skip

    _assert_same_meta(ours, theirs)


def test_chord_error_meta_matches_capture(app: Caraway, captures_dir: Path) -> None:
    theirs = _load(captures_dir, "redis_misc.json")["chord_failed_body_meta"]
    message = theirs["result"]["exc_message"][0]

    ours = app.backend.build_meta(
        theirs["task_id"], ChordError(message), states.FAILURE, theirs["traceback"],
        _request(theirs),
    )  # fmt: skip

    _assert_same_meta(ours, theirs)


def test_extended_success_meta_matches_capture(extended_app: Caraway, captures_dir: Path) -> None:
    theirs = _load(captures_dir, "redis_unacked.json")["extended_success_meta"]
    request = _request(
        theirs, task="capapp.slow", args=[2], kwargs={}, hostname="w1@spec", retries=0,
        delivery_info={"exchange": "", "routing_key": "celery", "priority": 0},
    )  # fmt: skip

    ours = extended_app.backend.build_meta(theirs["task_id"], 2, states.SUCCESS, None, request)

    _assert_same_meta(ours, theirs)


def test_extended_started_meta_matches_capture(extended_app: Caraway, captures_dir: Path) -> None:
    theirs = _load(captures_dir, "redis_unacked.json")["started_meta"]
    task_id = str(uuid.uuid4())
    request = _request(
        dict(theirs, task_id=task_id), task="capapp.slow", args=[2], kwargs={},
        hostname="w1@spec", retries=0, delivery_info={"routing_key": "celery"},
    )  # fmt: skip

    extended_app.backend.mark_as_started(task_id, request, **theirs["result"])

    _assert_same_meta(extended_app.backend.get_task_meta(task_id), dict(theirs, task_id=task_id))


def test_stored_payload_is_celerys_json_byte_for_byte(app: Caraway, captures_dir: Path) -> None:
    """What a Redis engine would SET: the captured string, but for the date."""
    theirs = _worker_meta(captures_dir, "chord_body_meta")
    task_id = theirs["task_id"]

    ours = app.backend.encode(
        app.backend.build_meta(task_id, 3, states.SUCCESS, None, _request(theirs))
    )

    raw_by_key = _load(captures_dir, "redis_worker.json")["keys_db1_final"]
    captured = raw_by_key[TASK_KEY_PREFIX + task_id]["value"]
    date = json.loads(ours.payload)["date_done"]
    assert ours.content_type == "application/json"
    assert ours.payload.decode() == captured.replace(theirs["date_done"], date)


def test_every_final_meta_in_the_capture_keeps_celerys_key_order(captures_dir: Path) -> None:
    """docs/celery-wire.md §5.3: status, result, traceback, children, date_done, [group_id,
    parent_id], task_id."""
    order = ["status", "result", "traceback", "children", "date_done", "group_id", "parent_id"]
    raw_by_key = _load(captures_dir, "redis_worker.json")["keys_db1_final"]
    metas = [json.loads(v["value"]) for k, v in raw_by_key.items() if k.startswith(TASK_KEY_PREFIX)]
    assert len(metas) > 10

    for meta in metas:
        assert list(meta) == [key for key in order if key in meta] + ["task_id"]


# --- exceptions on the wire (docs/celery-wire.md §5.4) --------------------------------------------


class QuotaError(Exception):
    """An exception of this module: importable by name, so it round-trips as itself."""


class Outer:
    class Nested(Exception):
        pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("kaboom"), ("ValueError", ["kaboom"], "builtins")),
        (KeyError("try-again"), ("KeyError", ["try-again"], "builtins")),
        (TaskRevokedError("expired"), ("TaskRevokedError", ["expired"], "celery.exceptions")),
        (NotRegistered("x.y"), ("NotRegistered", ["x.y"], "celery.exceptions")),
        (TimeLimitExceeded(30), ("TimeLimitExceeded", [30], "celery.exceptions")),
        (ValueError("a", 2, None), ("ValueError", ["a", 2, None], "builtins")),
        (ValueError(), ("ValueError", [], "builtins")),
    ],
)
def test_exception_to_meta(exc: BaseException, expected: tuple[str, list[Any], str]) -> None:
    meta = exception_to_meta(exc)

    assert list(meta) == ["exc_type", "exc_message", "exc_module"]
    assert (meta["exc_type"], meta["exc_message"], meta["exc_module"]) == expected


def test_unserializable_exception_args_are_written_as_reprs() -> None:
    marker = object()

    meta = exception_to_meta(ValueError("x", marker))

    assert meta["exc_message"] == [repr("x"), repr(marker)]
    json.dumps(meta)


@pytest.mark.parametrize(
    ("meta", "cls"),
    [
        (
            {"exc_type": "ValueError", "exc_message": ["kaboom"], "exc_module": "builtins"},
            ValueError,
        ),
        (
            {"exc_type": "TaskRevokedError", "exc_message": ["terminated"],
             "exc_module": "celery.exceptions"},
            TaskRevokedError,
        ),
        (
            {"exc_type": "NotRegistered", "exc_message": ["capapp.nonexistent"],
             "exc_module": "celery.exceptions"},
            NotRegistered,
        ),
        (
            {"exc_type": "ChordError", "exc_message": ["Dependency x raised ValueError('y')"],
             "exc_module": "celery.exceptions"},
            ChordError,
        ),
        (
            {"exc_type": "MaxRetriesExceededError", "exc_message": ["no more"],
             "exc_module": "caraway.exceptions"},
            MaxRetriesExceededError,
        ),
    ],
)  # fmt: skip
def test_meta_to_exception_rebuilds_known_classes(meta: dict[str, Any], cls: type) -> None:
    exc = meta_to_exception(meta)

    assert type(exc) is cls
    assert list(exc.args) == meta["exc_message"]


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("kaboom", 7),
        TaskRevokedError("revoked"),
        QuotaError("over quota", 7),
        Outer.Nested("deep"),
        ZeroDivisionError("division by zero"),
    ],
)
def test_exceptions_round_trip_through_json(exc: BaseException) -> None:
    wire = json.loads(json.dumps(exception_to_meta(exc)))

    back = meta_to_exception(wire)

    assert type(back) is type(exc)
    assert back.args == exc.args


def test_celery_written_exception_reads_as_ours_and_ours_writes_as_celerys() -> None:
    back = meta_to_exception(
        {"exc_type": "Retry", "exc_message": ["Retry in 1s"], "exc_module": "celery.exceptions"}
    )

    assert isinstance(back, Retry)
    assert exception_to_meta(TaskRevokedError("x"))["exc_module"] == "celery.exceptions"


def test_unimportable_exception_becomes_a_stand_in_with_its_name_and_args(
    captures_dir: Path,
) -> None:
    # interop.json: Celery raised a class named QuotaExceeded with args ("over quota", 7).
    seen = _load(captures_dir, "interop.json")["client_reads_handmade_failure"]
    meta = {"exc_type": "QuotaExceeded", "exc_message": ["over quota", 7],
            "exc_module": "foreign.errors"}  # fmt: skip

    exc = meta_to_exception(meta)

    assert type(exc).__name__ == seen["python_type"] == "QuotaExceeded"
    assert list(exc.args) == seen["args"]
    assert str(exc) == seen["str"]
    assert isinstance(exc, Exception)
    assert type(meta_to_exception(meta)) is type(exc), "one stand-in class per name"
    with pytest.raises(type(exc)):
        raise exc


def test_unknown_name_in_a_known_module_also_gets_a_stand_in() -> None:
    exc = meta_to_exception(
        {"exc_type": "NoSuchError", "exc_message": ["m"], "exc_module": "celery.exceptions"}
    )

    assert type(exc).__name__ == "NoSuchError"
    assert exc.args == ("m",)


def test_non_exception_class_is_not_instantiated() -> None:
    exc = meta_to_exception({"exc_type": "dumps", "exc_message": ["x"], "exc_module": "json"})

    assert isinstance(exc, Exception)
    assert type(exc).__name__ == "dumps"


# --- reading captured results through AsyncResult ---------------------------------------------


def _store_raw(backend: Backend, task_id: str, meta: dict[str, Any]) -> None:
    payload = json.dumps(dict(meta, task_id=task_id)).encode()
    backend.set_raw(
        TASK_KEY_PREFIX + task_id, Stored(payload, "application/json", "utf-8"),
        meta["status"], None,
    )  # fmt: skip


def test_async_result_reads_captured_failure(app: Caraway, captures_dir: Path) -> None:
    theirs = _worker_meta(captures_dir, "fail_meta")
    task_id = str(uuid.uuid4())
    _store_raw(app.backend, task_id, theirs)

    result = app.AsyncResult(task_id)

    assert result.state == states.FAILURE
    assert result.traceback == theirs["traceback"]
    with pytest.raises(ValueError, match="kaboom"):
        result.get(timeout=1)


def test_async_result_reads_captured_success_progress_and_foreign_failure(
    app: Caraway, captures_dir: Path
) -> None:
    success, progress, foreign = (str(uuid.uuid4()) for _ in range(3))
    _store_raw(app.backend, success, _worker_meta(captures_dir, "add_meta"))
    _store_raw(app.backend, progress, _load(captures_dir, "redis_worker.json")[
        "progress_states_seen"][1])  # fmt: skip
    _store_raw(app.backend, foreign, {
        "status": "FAILURE", "traceback": "Traceback (foreign)\n", "children": [],
        "date_done": "2026-11-22T00:22:36.844051+00:00",
        "result": {"exc_type": "QuotaExceeded", "exc_message": ["over quota", 7],
                   "exc_module": "foreign.errors"},
    })  # fmt: skip

    assert app.AsyncResult(success).get(timeout=1) == 5
    assert app.AsyncResult(progress).state == "PROGRESS"
    assert app.AsyncResult(progress).info == {"current": 1, "total": 3}
    failed = app.AsyncResult(foreign)
    with pytest.raises(Exception, match="over quota") as raised:
        failed.get(timeout=1)
    assert type(raised.value).__name__ == "QuotaExceeded"
    assert raised.value.args == ("over quota", 7)
    assert failed.traceback == "Traceback (foreign)\n"
