"""Plain ``delay()`` calls built from the task's template (caraway.calling.plain): the same
message, byte for byte, as the ordinary path builds, and a new template after any change."""

from __future__ import annotations

from typing import Any

import pytest

from caraway import Caraway, signals
from caraway.calling import send_task_message
from caraway.engines.base.broker import Outgoing
from caraway.queues import Exchange, Queue


def _exact(outgoing: Outgoing) -> tuple[Any, ...]:
    """Everything that reaches a broker, with the order of headers and properties."""
    message = outgoing.message
    return (
        list(message.headers.items()), list(message.properties.items()), message.body,
        message.content_type, message.content_encoding, outgoing.queue, outgoing.priority,
        outgoing.deliver_at, outgoing.exchange, outgoing.routing_key, outgoing.exchange_type,
        outgoing.declaration,
    )  # fmt: skip


def _as_built_again(app: Caraway, task: Any, outgoing: Outgoing, *args: Any, **kwargs: Any) -> Any:
    """The ordinary path's message for the same call and id, as the broker would get it."""
    sent: list[Outgoing] = []
    publish = app.broker.publish
    app.broker.publish = sent.extend  # type: ignore[method-assign]
    try:
        task_id = outgoing.message.headers["id"]
        send_task_message(app, task.name, args, kwargs, task=task, task_id=task_id)
    finally:
        app.broker.publish = publish  # type: ignore[method-assign]
    return _exact(sent[0])


TASK_OPTIONS: list[dict[str, Any]] = [
    {},
    {"queue": "other", "priority": 4, "time_limit": 30, "soft_time_limit": 20},
    {"serializer": "pickle", "compression": "zlib", "ignore_result": False},
    {"exchange": "media", "routing_key": "media.video"},
]


@pytest.mark.parametrize("options", TASK_OPTIONS, ids=["plain", "queue", "pickle", "exchange"])
def test_plain_calls_after_the_first_send_what_the_ordinary_path_builds(
    app: Caraway, published: list[Outgoing], options: dict[str, Any]
) -> None:
    app.conf.task_queues = [Queue("celery"), Queue("media", Exchange("media", "topic"), "media.#")]

    @app.task(name="proj.add", **options)
    def add(x: Any, y: Any = 0) -> Any:
        return x

    add.delay(1, 2)
    assert add._send_template is not None
    calls = [((3,), {"y": "é"}), ((b"\x00\xff",), {}), (([1.5, None],), {"y": {"k": (1,)}})]
    for args, kwargs in calls:
        add.delay(*args, **kwargs)
    add.apply_async((4, 5))

    for outgoing, (args, kwargs) in zip(published[1:], [*calls, ((4, 5), {})], strict=True):
        assert _exact(outgoing) == _as_built_again(app, add, outgoing, *args, **kwargs)
    ids = {o.message.headers["id"] for o in published}
    assert len(ids) == len(published)


def _last(published: list[Outgoing]) -> Any:
    return published[-1].message


def test_a_settings_change_is_seen_by_the_next_plain_call(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(name="proj.noop")
    def noop() -> None:
        return None

    noop.delay()
    noop.delay()
    app.conf.task_default_priority = 7
    app.conf.task_compression = "gzip"
    noop.delay()

    assert _last(published).properties["priority"] == 7
    assert _last(published).headers["compression"] == "application/x-gzip"
    assert _exact(published[-1]) == _as_built_again(app, noop, published[-1])


def test_a_task_attribute_changed_after_sends_is_seen(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(name="proj.noop")
    def noop() -> None:
        return None

    noop.delay()
    noop.delay()
    noop.queue = "elsewhere"  # type: ignore[misc]
    type(noop).priority = 9  # type: ignore[misc]
    noop.delay()

    assert published[-1].queue == "elsewhere"
    assert _last(published).properties["priority"] == 9


def test_routes_and_queues_changed_in_place_are_seen(
    app: Caraway, published: list[Outgoing]
) -> None:
    route = {"queue": "first"}
    app.conf.task_routes = {"proj.noop": route}
    app.conf.task_queues = [Queue("first")]

    @app.task(name="proj.noop")
    def noop() -> None:
        return None

    noop.delay()
    noop.delay()
    route["queue"] = "second"
    app.conf.task_queues.append(Queue("second", Exchange("second"), "second"))
    noop.delay()

    assert [o.queue for o in published] == ["first", "first", "second"]


def test_a_router_function_is_asked_on_every_call(app: Caraway, published: list[Outgoing]) -> None:
    app.conf.task_routes = [lambda name, args, kwargs, options, task=None, **kw: f"q{args[0]}"]

    @app.task(name="proj.echo")
    def echo(x: int) -> int:
        return x

    for x in (1, 2, 3):
        echo.delay(x)

    assert [o.queue for o in published] == ["q1", "q2", "q3"]
    assert echo._send_template is None


def test_publish_signals_see_each_calls_own_headers_and_may_change_them(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    seen: list[tuple[Any, ...]] = []

    def before(sender: Any = None, body: Any = None, headers: Any = None, **kw: Any) -> None:
        seen.append((sender, body, headers["id"], kw["routing_key"], kw["properties"]["priority"]))
        headers["stamp"] = headers["id"]  # changed here, it goes out with this message only
        headers["timelimit"].append("x")

    after: list[Any] = []

    def on_after(sender: Any = None, headers: Any = None, **_: Any) -> None:
        after.append(headers)

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(on_after)
    try:
        first, second = add.delay(1, 2), add.delay(3, 4)
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(on_after)

    empty = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert seen == [
        ("proj.add", ((1, 2), {}, empty), first.id, "celery", 0),
        ("proj.add", ((3, 4), {}, empty), second.id, "celery", 0),
    ]
    assert [o.message.headers["stamp"] for o in published] == [first.id, second.id]
    assert [o.message.headers["timelimit"] for o in published] == [[None, None, "x"]] * 2
    assert [h["id"] for h in after] == [first.id, second.id]
