"""``send_batch``: many signatures, few broker calls, each message as ``apply_async`` sends it."""

from __future__ import annotations

import gc
import json
import re
from typing import Any

import pytest

from caraway import Caraway, serialization, signals
from caraway.calling import batch, publish_pauses, send_batch
from caraway.engines.base.broker import Outgoing
from caraway.protocol import decode_body


def test_send_batch_publishes_in_chunks_with_each_messages_options(
    app: Caraway, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    calls: list[int] = []
    publish = app.broker.publish

    def record(batch: Any) -> None:
        calls.append(len(batch))
        publish(batch)

    monkeypatch.setattr(app.broker, "publish", record)
    monkeypatch.setattr("caraway.calling.BATCH_CHUNK", 4)
    after: list[str] = []

    def on_after(sender: Any = None, headers: Any = None, **_: Any) -> None:
        after.append(headers["id"])

    signals.after_task_publish.connect(on_after)
    try:
        sigs = [add.s(i, i) for i in range(9)] + [add.s(1, 1).set(queue="other", priority=5)]
        results = send_batch(app, sigs)
    finally:
        signals.after_task_publish.disconnect(on_after)

    assert calls == [4, 4, 2]
    assert after == [r.id for r in results]
    assert app.broker.size("celery") == 9
    assert app.broker.size("other") == 1


def test_send_batch_of_nothing_publishes_nothing(app: Caraway) -> None:
    assert send_batch(app, []) == []


def _comparable(outgoing: Outgoing) -> dict[str, Any]:
    """A message with its per-call ids blanked, body decoded: what must match field by field."""
    message = outgoing.message
    task_id = message.headers["id"]
    headers = {k: (None if v == task_id else v) for k, v in message.headers.items()}
    properties = {k: (None if v == task_id else v) for k, v in message.properties.items()}
    body = decode_body(message, None)
    return {
        "headers": headers, "properties": properties, "body": body, "queue": outgoing.queue,
        "priority": outgoing.priority, "content_type": message.content_type,
    }  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{}, {"queue": "other", "priority": 3}, {"serializer": "pickle", "compression": "zlib"}],
    ids=["plain", "routed", "pickle+zlib"],
)
def test_batched_messages_equal_what_apply_async_sends(
    app: Caraway, published: list[Outgoing], options: dict[str, Any]
) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    calls = [((1, 2), {}), ((3,), {"y": "é"}), ((b"\x00",), {})]
    singles = [add.s(*a, **k).set(**options).apply_async() for a, k in calls]
    one_by_one = list(published)
    published.clear()

    results = send_batch(app, [add.s(*a, **k).set(**options) for a, k in calls])

    assert [_comparable(o) for o in published] == [_comparable(o) for o in one_by_one]
    assert [o.message.headers["id"] for o in published] == [r.id for r in results]
    assert len({r.id for r in results} | {r.id for r in singles}) == 6
    for outgoing in published:  # every id field is the message's own
        headers, properties = outgoing.message.headers, outgoing.message.properties
        assert headers["root_id"] == headers["id"] == properties["correlation_id"]


def test_calls_that_depend_on_the_clock_or_links_are_built_one_by_one(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(name="proj.echo")
    def echo(x: int) -> int:
        return x

    send_batch(app, [echo.s(1), echo.s(2).set(countdown=60), echo.s(3).set(link=echo.s())])

    first, later, linked = (o.message for o in published)
    assert first.headers["eta"] is None
    assert later.headers["eta"] is not None
    _, _, embed = serialization.loads(linked.body, linked.content_type)
    assert embed["callbacks"][0]["task"] == "proj.echo"


def test_a_batch_still_checks_each_calls_arguments(app: Caraway) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        send_batch(app, [add.s(1, 2), add.s(3)])


def test_garbage_collection_pauses_for_a_batch_and_resumes_even_when_it_fails(
    app: Caraway, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    seen: list[bool] = []
    publish = app.broker.publish

    def record(batch: Any) -> None:
        seen.append(gc.isenabled())
        publish(batch)

    monkeypatch.setattr(app.broker, "publish", record)
    assert gc.isenabled()
    send_batch(app, [add.s(1, 2), add.s(3, 4)])
    assert seen == [False]
    assert gc.isenabled()

    with pytest.raises(TypeError):
        send_batch(app, [add.s(1, 2), add.s(1, 2, 3)])
    assert gc.isenabled()


def test_task_ids_given_in_a_batch_are_kept(app: Caraway, published: list[Outgoing]) -> None:
    @app.task(name="proj.noop")
    def noop() -> None:
        return None

    results = send_batch(app, [noop.s().set(task_id=f"id-{i}") for i in range(3)])

    assert [r.id for r in results] == ["id-0", "id-1", "id-2"]
    assert [o.message.headers["id"] for o in published] == ["id-0", "id-1", "id-2"]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _by_position(outgoings: list[Outgoing]) -> str:
    """The messages as JSON with each distinct id replaced by its order of appearance."""
    text = json.dumps(
        [_comparable(o) for o in outgoings], default=repr, sort_keys=True
    )  # fmt: skip
    seen: dict[str, str] = {}
    return _UUID.sub(lambda m: seen.setdefault(m.group(), f"<id{len(seen)}>"), text)


def test_group_and_chord_members_derived_from_one_message_equal_one_by_one_sends(
    app: Caraway, published: list[Outgoing], monkeypatch: pytest.MonkeyPatch
) -> None:
    from caraway.canvas import chord, group

    app.conf.result_backend = "cache+memory://"

    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="proj.total")
    def total(values: list[int]) -> int:
        return sum(values)

    def send_all() -> str:
        published.clear()
        group(add.s(i, i) for i in range(4)).apply_async(queue="q1")
        chord([add.s(i, 1) for i in range(3)], total.s()).apply_async()
        return _by_position(published)

    derive = batch.derive
    calls: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        return derive(*args, **kwargs)

    monkeypatch.setattr(batch, "derive", counted)
    derived = send_all()
    assert len(calls) == 3 + 2  # all but the first member of the group and of the header
    monkeypatch.setattr(batch.Shapes, "shape_of", lambda self, sig: None)
    one_by_one = send_all()

    assert derived == one_by_one
    assert derived.count('"group_index": 3') == 1


def test_publish_pauses_follow_celerys_retry_policy() -> None:
    app = Caraway("pauses", broker="memory://", set_as_current=False)
    try:
        # Celery's default policy: 3 retries, 0 s first, +0.2 s each, at most 1 s.
        assert publish_pauses(app, {}) == [0.0, 0.2, 0.4]
        step = {"max_retries": 4, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1}
        assert publish_pauses(app, {"retry_policy": step}) == [0.5, 1.0, 1.0, 1.0]
        assert publish_pauses(app, {"retry": False}) == []
    finally:
        app.close()


def test_a_router_function_routes_each_call_of_a_batch_by_its_arguments(app: Caraway) -> None:
    """A router function may look at a call's arguments (Celery passes them), so calls of
    one task are not one shape then: each is routed on its own."""

    def by_parity(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> Any:
        return {"queue": "even" if args[0] % 2 == 0 else "odd"}

    app.conf.task_routes = (by_parity,)

    @app.task(name="proj.parity")
    def parity(x: int) -> int:
        return x

    send_batch(app, [parity.s(i) for i in range(6)])

    assert (app.broker.size("even"), app.broker.size("odd")) == (3, 3)
