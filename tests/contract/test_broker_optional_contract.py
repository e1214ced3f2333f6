"""The optional part of the broker contract, on the engines that have each piece.

``Broker`` gives lease renewal, orphan reclaim, deferral, prefetch windows, loss of deliveries
and the consuming switches default (empty) bodies; an engine that declares the capability
(in its ``capabilities`` record, or by overriding the method) must keep the promise, checked
here against its real server. Where an engine lacks the capability, the test is skipped with the
capability as the reason, so a report shows what each engine leaves to the layers above.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from caraway.engines.base.broker import Broker, Delivery, Outgoing
from caraway.engines.base.topology import QueueDeclaration
from caraway.exceptions import Unreachable
from caraway.protocol import Message, build_task_message
from caraway.utils.time import FakeClock

#: Lease length (``visibility_timeout``) of the brokers the lease tests make.
LEASE = 0.5

Twin = Callable[..., Broker]


def _message() -> Message:
    return build_task_message("contract.task", str(uuid.uuid4()), (1,), {})


def _queue() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


def _fetch_all(broker: Broker, queue: str, expected: int, timeout: float = 5.0) -> list[Delivery]:
    found: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        found.extend(broker.fetch([queue], expected - len(found), 0.2))
    return found


def _overrides(broker: Broker, method: str) -> bool:
    """Whether the engine implements ``method`` rather than inheriting the default."""
    return getattr(type(broker), method) is not getattr(Broker, method)


@pytest.fixture
def twin(broker: Broker) -> Iterator[Twin]:
    """``twin(**options)``: another consumer on the same server and names (another worker)."""
    made: list[Broker] = []

    def make(**options: Any) -> Broker:
        other = type(broker)(broker.url, {**broker.options, **options})
        made.append(other)
        return other

    yield make
    for other in made:
        other.close()


def _lacks(broker: Broker, capability: str) -> None:
    """Skip, naming the engine and the capability it lacks."""
    pytest.skip(f"{type(broker).__name__}: {capability}")


def _reclaim(broker: Broker) -> int:
    """What a worker's housekeeping does between fetches, on engines that reclaim."""
    return broker.reclaim_orphans() if broker.capabilities.reclaims_orphans else 0


# --- leases (``leases``, ``renew``) -------------------------------------------------------------


def _on_one_clock(*brokers: Broker) -> FakeClock:
    """A fake clock for these consumers' leases and holds: "after the lease" takes no time."""
    clock = FakeClock(time.time())
    for broker in brokers:
        broker.clock = clock
    return clock


def test_renewed_leases_keep_messages_from_other_consumers(broker: Broker, twin: Twin) -> None:
    if not broker.capabilities.leases:
        _lacks(
            broker,
            "leases is False: a delivery stays held until it is settled or its connection closes",
        )
    holder, other = twin(visibility_timeout=LEASE), twin(visibility_timeout=LEASE)
    clock = _on_one_clock(holder, other)
    queue = _queue()
    holder.publish([Outgoing(_message(), queue)])
    (delivery,) = _fetch_all(holder, queue, 1)

    for _ in range(5):  # 2.5 leases, renewed every half lease
        clock.advance(LEASE / 2)
        holder.renew([delivery.tag])
        _reclaim(other)
        assert other.fetch([queue], 1, 0.05) == []

    holder.ack([delivery.tag])
    assert _reclaim(other) == 0
    assert other.fetch([queue], 1, 0.2) == []


def test_an_unrenewed_lease_gives_the_message_back(broker: Broker, twin: Twin) -> None:
    if not broker.capabilities.leases:
        _lacks(
            broker,
            "leases is False: a delivery stays held until it is settled or its connection closes",
        )
    holder, other = twin(visibility_timeout=LEASE), twin(visibility_timeout=LEASE)
    clock = _on_one_clock(holder, other)
    queue = _queue()
    message = _message()
    holder.publish([Outgoing(message, queue)])
    assert len(_fetch_all(holder, queue, 1)) == 1
    _reclaim(other)
    assert other.fetch([queue], 1, 0.05) == []  # still leased

    clock.advance(LEASE * 1.5)
    _reclaim(other)
    (again,) = _fetch_all(other, queue, 1)

    assert again.message.task_id == message.task_id
    assert again.redelivered
    other.ack([again.tag])


# --- orphans (``reclaim_orphans``) ---------------------------------------------------------------

_DYING_CONSUMER = """
import json, os, sys
from caraway.utils.imports import symbol_by_name
engine, url, options, queue = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
broker = symbol_by_name(engine)(url, options)
print(len(broker.fetch([queue], 1, 5.0)), flush=True)
os._exit(0)  # killed: no ack, no release, no close
"""


def test_messages_of_a_dead_consumer_are_reclaimed(broker: Broker, twin: Twin) -> None:
    if not broker.capabilities.reclaims_orphans:
        _lacks(broker, "reclaims_orphans is False: the server gives a dead consumer's work back")
    queue = _queue()
    message = _message()
    broker.publish([Outgoing(message, queue)])
    engine = f"{type(broker).__module__}:{type(broker).__qualname__}"
    options = json.dumps({**broker.options, "visibility_timeout": 1.0})
    survivor = twin(visibility_timeout=1.0)
    died = subprocess.run(
        [sys.executable, "-c", _DYING_CONSUMER, engine, broker.url, options, queue],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert died.stdout.strip() == "1", died.stderr

    reclaimed, found = 0, []
    deadline = time.monotonic() + 5.0
    while not found and time.monotonic() < deadline:
        reclaimed += _reclaim(survivor)
        found = survivor.fetch([queue], 1, 0.2)

    assert reclaimed >= 1
    assert [d.message.task_id for d in found] == [message.task_id]
    assert found[0].redelivered
    survivor.ack([found[0].tag])


# --- deferral (``max_hold``, ``defer``) ------------------------------------------------------


def test_a_deferred_message_comes_back_near_its_time(broker: Broker) -> None:
    if broker.capabilities.max_hold is None:
        _lacks(broker, "max_hold is None: a consumer may hold an ETA message as long as it likes")
    queue = _queue()
    message = _message()
    broker.publish([Outgoing(message, queue)])
    (delivery,) = _fetch_all(broker, queue, 1)

    assert not broker.defer(delivery, time.time() + 0.1)  # too near: the consumer keeps it
    deferred_at = time.monotonic()
    assert broker.defer(delivery, time.time() + 1.5)

    (again,) = _fetch_all(broker, queue, 1, timeout=6.0)
    assert time.monotonic() - deferred_at >= 0.8
    assert again.message.task_id == message.task_id
    broker.ack([again.tag])
    assert broker.fetch([queue], 1, 0.3) == []  # the original was settled by the deferral


def test_an_engine_without_deferral_says_so_and_keeps_the_delivery(broker: Broker) -> None:
    if _overrides(broker, "defer"):
        _lacks(broker, "defer implemented: covered by the deferral test")
    queue = _queue()
    broker.publish([Outgoing(_message(), queue)])
    (delivery,) = _fetch_all(broker, queue, 1)

    assert broker.defer(delivery, time.time() + 60) is False

    broker.ack([delivery.tag])  # still held by this consumer
    assert broker.fetch([queue], 1, 0.3) == []


# --- connections (``loses_deliveries``, ``lost``, ``connect``) ---------------------------------


def test_live_deliveries_are_not_lost(broker: Broker) -> None:
    queue = _queue()
    broker.publish([Outgoing(_message(), queue)])
    (delivery,) = _fetch_all(broker, queue, 1)

    assert broker.lost([delivery.tag]) == set()
    broker.ack([delivery.tag])


def test_deliveries_die_with_their_connection(broker: Broker, twin: Twin) -> None:
    if not broker.capabilities.loses_deliveries:
        _lacks(broker, "loses_deliveries is False: delivery tags outlive a connection")
    consumer, other = twin(), twin()
    queue = _queue()
    message = _message()
    consumer.publish([Outgoing(message, queue)])
    (delivery,) = _fetch_all(consumer, queue, 1)

    consumer.close()

    assert consumer.lost([delivery.tag]) == {delivery.tag}
    (again,) = _fetch_all(other, queue, 1)
    assert again.message.task_id == message.task_id
    assert again.redelivered
    other.ack([again.tag])


def test_connect_reaches_the_server_or_says_unreachable(broker: Broker, twin: Twin) -> None:
    if not _overrides(broker, "connect"):
        _lacks(broker, "connect not implemented: an embedded engine has no server to reach")
    if not re.search(r":\d+/", broker.url):
        _lacks(broker, f"its URL {broker.url!r} names no server port to point elsewhere")
    broker.connect()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nowhere = type(broker)(re.sub(r":\d+/", f":{port}/", broker.url, count=1), broker.options)
    try:
        with pytest.raises(Unreachable):
            nowhere.connect()
    finally:
        nowhere.close()


# --- consuming switches (``qos``, ``stop_consuming``, ``resume_consuming``, ``declare``) -----


def test_a_prefetch_window_takes_messages_ahead(broker: Broker, twin: Twin) -> None:
    if not _overrides(broker, "qos"):
        _lacks(broker, "qos not implemented: the engine is polled, prefetch is done above it")
    queue = _queue()
    broker.qos(5)
    broker.publish([Outgoing(_message(), queue) for _ in range(3)])

    first = _fetch_all(broker, queue, 1)

    assert twin().fetch([queue], 1, 0.5) == []  # the rest waits in this consumer's window
    rest = _fetch_all(broker, queue, 2)
    assert len(first) + len(rest) == 3
    broker.ack([d.tag for d in [*first, *rest]])


def test_stopping_a_queue_hands_back_what_was_not_taken(broker: Broker, twin: Twin) -> None:
    queue = _queue()
    broker.publish([Outgoing(_message(), queue) for _ in range(3)])
    first = _fetch_all(broker, queue, 1)

    broker.stop_consuming(queue)
    others = _fetch_all(twin(), queue, 2)
    broker.resume_consuming(queue)
    broker.publish([Outgoing(_message(), queue)])
    last = _fetch_all(broker, queue, 1)

    assert (len(first), len(others), len(last)) == (1, 2, 1)
    broker.ack([d.tag for d in [*first, *last]])


def test_a_declared_queue_exists_and_is_empty(broker: Broker) -> None:
    queue = _queue()
    broker.declare(queue)
    broker.declare(queue)  # idempotent

    assert broker.size(queue) == 0
    broker.publish([Outgoing(_message(), queue)])
    (delivery,) = _fetch_all(broker, queue, 1)
    broker.ack([delivery.tag])


# --- exchanges ------------------------------------------------------------------------------


def _routed(message: Message, exchange: str, key: str, kind: str) -> Outgoing:
    """What the calling layer hands an engine for a message sent to ``exchange``."""
    message.properties["delivery_info"] = {"exchange": exchange, "routing_key": key}
    return Outgoing(message, "", exchange=exchange, routing_key=key, exchange_type=kind)


@pytest.mark.parametrize("how", ["publish", "publish_async"])
def test_exchanges_route_by_binding_and_broadcast_to_every_bound_queue(
    broker: Broker, twin: Twin, how: str
) -> None:
    if not broker.capabilities.exchanges:
        _lacks(broker, "exchanges is False: it routes by queue name only")
    news, bcast, other = f"news-{uuid.uuid4().hex[:6]}", f"bc-{uuid.uuid4().hex[:6]}", twin()
    sport, everything = _queue(), _queue()
    mine, theirs = f"bcast.{uuid.uuid4().hex}", f"bcast.{uuid.uuid4().hex}"
    broker.declare_bound(QueueDeclaration(sport, news, "topic", "news.sport.*"))
    broker.declare_bound(QueueDeclaration(everything, news, "topic", "#"))
    broker.declare_bound(QueueDeclaration(mine, bcast, "fanout", "celery", auto_delete=True))
    other.declare_bound(QueueDeclaration(theirs, bcast, "fanout", "celery", auto_delete=True))
    batch = [
        _routed(_message(), news, "news.sport.golf", "topic"),
        _routed(_message(), news, "news.weather", "topic"),
        _routed(_message(), bcast, "celery", "fanout"),
    ]

    if how == "publish":
        broker.publish(batch)
    else:
        asyncio.run(broker.publish_async(batch))

    tags: list[Any] = []

    def seen(consumer: Broker, queue: str, count: int) -> list[tuple[str, str | None]]:
        got = _fetch_all(consumer, queue, count)
        tags.extend(str(d.tag) for d in got if consumer is broker)
        consumer.ack([d.tag for d in got])
        return sorted((d.exchange, d.routing_key) for d in got)

    assert seen(broker, sport, 1) == [(news, "news.sport.golf")]
    assert seen(broker, everything, 2) == [(news, "news.sport.golf"), (news, "news.weather")]
    assert seen(broker, mine, 1) == [(bcast, "celery")]
    assert seen(other, theirs, 1) == [(bcast, "celery")]
    assert broker.size(sport) == broker.size(everything) == 0
    assert len(set(tags)) == 4  # every copy settles on its own (Redis: by its delivery tag)


# --- the rest -----------------------------------------------------------------------------


def test_publish_async_stores_the_batch(broker: Broker) -> None:
    queue = _queue()
    sent = [_message() for _ in range(2)]

    asyncio.run(broker.publish_async([Outgoing(m, queue) for m in sent]))

    got = _fetch_all(broker, queue, 2)
    assert sorted(d.message.task_id for d in got) == sorted(m.task_id for m in sent)
    broker.ack([d.tag for d in got])


def test_a_later_broker_learns_earlier_revocations(broker: Broker, twin: Twin) -> None:
    if not broker.capabilities.keeps_revocations:
        _lacks(broker, "keeps_revocations is False: only brokers already listening hear them")
    task_id = str(uuid.uuid4())
    broker.revoke([task_id], terminate=True)

    seen, _ = twin().revocations(0)

    assert (task_id, True) in seen


def test_a_delayed_release_comes_back_after_the_delay(broker: Broker) -> None:
    queue = _queue()
    message = _message()
    broker.publish([Outgoing(message, queue)])
    (delivery,) = _fetch_all(broker, queue, 1)

    released_at = time.monotonic()
    broker.release([delivery.tag], delay=1.2)
    found: list[Delivery] = []
    while not found and time.monotonic() - released_at < 6.0:
        _reclaim(broker)  # what a worker does between fetches (Redis gives it back there)
        found = broker.fetch([queue], 1, 0.1)

    assert time.monotonic() - released_at >= 0.9
    assert [d.message.task_id for d in found] == [message.task_id]
    broker.ack([found[0].tag])


def test_a_held_message_waits_for_the_brokers_clock(broker: Broker) -> None:
    """An engine that holds messages for later reads their time on ``broker.clock`` and says
    lists it with that time (``delayed``): an hour passes on a fake clock in no time."""
    if not broker.capabilities.native_delay:
        _lacks(broker, "native_delay is False: the worker holds ETAs, on its own clock")
    clock = _on_one_clock(broker)
    queue = _queue()
    message = _message()
    due = clock.time() + 3600
    broker.publish([Outgoing(message, queue, deliver_at=due)])

    assert broker.fetch([queue], 1, 0.1) == []
    assert [(when, d.message.task_id) for when, d in broker.delayed([queue])] == [
        (pytest.approx(due), message.task_id)
    ]
    clock.advance(3600)
    found = _fetch_all(broker, queue, 1)

    assert [d.message.task_id for d in found] == [message.task_id]
    assert broker.delayed([queue]) == []
    broker.ack([found[0].tag])


def test_a_delayed_release_waits_for_the_brokers_clock(broker: Broker) -> None:
    if not broker.capabilities.native_delay:
        _lacks(broker, "native_delay is False: the worker holds ETAs, on its own clock")
    clock = _on_one_clock(broker)
    queue = _queue()
    broker.publish([Outgoing(_message(), queue)])
    (delivery,) = _fetch_all(broker, queue, 1)

    broker.release([delivery.tag], delay=600)

    assert broker.fetch([queue], 1, 0.1) == []
    assert [when for when, _ in broker.delayed([queue])] == [pytest.approx(clock.time() + 600)]
    clock.advance(600)
    (again,) = _fetch_all(broker, queue, 1)
    broker.ack([again.tag])
