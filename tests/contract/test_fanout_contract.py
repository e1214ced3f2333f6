"""What every broadcast engine must do (``caraway.engines.base.fanout``), on each real server.

Remote control and events rely on these promises: a copy for every bound subscriber, AMQP's
matching rules for topic and direct exchanges, nothing for a subscriber bound after the send
(at most once, only to those present), and nothing more once a subscription is closed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from caraway.engines.amqp.fanout import AMQPSubscription
from caraway.engines.base.broker import Broker
from caraway.engines.base.fanout import Binding, Exchange, Fanout, Subscription
from caraway.engines.registry import BROKERS as BROKER_TABLE
from caraway.protocol import Message
from caraway.utils.imports import symbol_by_name

#: How long a test waits for a message that must come, and for one that must not.
ARRIVES, ABSENT = 5.0, 0.3


def test_every_engine_that_broadcasts_is_in_the_suite(broker_factories: dict[str, Any]) -> None:
    """The suite runs on each broker factory of ``tests/contract``; a built-in engine that
    declares ``broadcast`` needs one (its key is the engine's package name)."""
    broadcasting = {
        cls.__module__.split(".")[2]
        for path, _extra in BROKER_TABLE.values()
        if (cls := symbol_by_name(path)).capabilities.broadcast
    }

    assert broadcasting == {"memory", "sqlite", "redis", "amqp", "postgresql"}
    assert broadcasting <= set(broker_factories)


@pytest.fixture
def fanout(broker: Broker) -> Iterator[Fanout]:
    """The broadcast engine of the broker under test, closed afterwards."""
    if not broker.capabilities.broadcast:
        pytest.skip(f"{type(broker).__name__} does not broadcast")
    engine = broker.fanout()
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def subscriptions() -> Iterator[list[Subscription]]:
    """Subscriptions a test opens, closed after it even when it fails."""
    opened: list[Subscription] = []
    yield opened
    for subscription in opened:
        subscription.close()


def _exchange(kind: str) -> Exchange:
    return Exchange(f"contract.{kind}.{uuid.uuid4().hex[:8]}", kind)


def _message(text: str) -> Message:
    headers = {"id": str(uuid.uuid4()), "text": text}
    return Message(headers, {"delivery_mode": 1}, text.encode(), "application/json", "utf-8")


def _subscribe(
    fanout: Fanout, opened: list[Subscription], exchange: Exchange, routing_key: str = ""
) -> Subscription:
    binding = Binding(f"contract-{uuid.uuid4().hex[:10]}", routing_key, expires=60.0)
    subscription = fanout.subscribe(exchange, binding)
    opened.append(subscription)
    return subscription


def _received(subscription: Subscription, expected: int, timeout: float = ARRIVES) -> list[Message]:
    """The messages received until ``expected`` arrived or ``timeout`` passed."""
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        found += subscription.get(min(remaining, 0.5))
    return found


def _texts(subscription: Subscription, expected: int, timeout: float = ARRIVES) -> list[str]:
    return [m.body.decode() for m in _received(subscription, expected, timeout)]


def _nothing_more(subscription: Subscription) -> list[str]:
    return _texts(subscription, 1, ABSENT)


def test_every_subscriber_gets_a_copy_intact(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    exchange = _exchange("fanout")
    first, second = (_subscribe(fanout, subscriptions, exchange) for _ in range(2))
    sent = _message("hello")

    fanout.publish(exchange, "", sent)

    for subscription in (first, second):
        (got,) = _received(subscription, 1)
        assert got.body == sent.body
        assert got.headers["id"] == sent.headers["id"]
        assert (got.content_type, got.content_encoding) == ("application/json", "utf-8")
        assert _nothing_more(subscription) == []


def test_messages_arrive_in_the_order_sent(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    exchange = _exchange("fanout")
    subscription = _subscribe(fanout, subscriptions, exchange)
    texts = [f"m{i}" for i in range(5)]

    for text in texts:
        fanout.publish(exchange, "", _message(text))

    assert _texts(subscription, 5) == texts


def test_a_fanout_exchange_ignores_routing_keys(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    exchange = _exchange("fanout")
    subscription = _subscribe(fanout, subscriptions, exchange, "bound.with.a.key")

    fanout.publish(exchange, "", _message("no key"))
    fanout.publish(exchange, "some.key", _message("another key"))

    assert _texts(subscription, 2) == ["no key", "another key"]


def test_only_messages_sent_after_subscribing_arrive(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    exchange = _exchange("fanout")
    early = _subscribe(fanout, subscriptions, exchange)  # the exchange exists on every engine
    fanout.publish(exchange, "", _message("before"))
    assert _texts(early, 1) == ["before"]

    late = _subscribe(fanout, subscriptions, exchange)
    fanout.publish(exchange, "", _message("after"))

    assert _texts(late, 1) == ["after"]
    assert _nothing_more(late) == []


def test_exchanges_do_not_leak_into_each_other(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    ours, other = _exchange("fanout"), _exchange("fanout")
    subscription = _subscribe(fanout, subscriptions, ours)

    fanout.publish(other, "", _message("elsewhere"))
    fanout.publish(ours, "", _message("here"))

    assert _texts(subscription, 1) == ["here"]
    assert _nothing_more(subscription) == []


#: Binding key → the keys (of ``TOPIC_KEYS``, sent in that order) it receives.
TOPIC_BINDINGS = {
    "#": ["a", "a.b", "a.b.c", "x.b", "b"],
    "a.#": ["a", "a.b", "a.b.c"],
    "a.*": ["a.b"],
    "*.b": ["a.b", "x.b"],
    "#.b": ["a.b", "x.b", "b"],
    "a.b": ["a.b"],
    "*": ["a", "b"],
    "a.#.c": ["a.b.c"],
}
TOPIC_KEYS = ["a", "a.b", "a.b.c", "x.b", "b"]


def test_topic_bindings_match_as_amqp_does(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    exchange = _exchange("topic")
    bound = {key: _subscribe(fanout, subscriptions, exchange, key) for key in TOPIC_BINDINGS}

    for key in TOPIC_KEYS:
        fanout.publish(exchange, key, _message(key))

    received = {key: _texts(sub, len(TOPIC_BINDINGS[key])) for key, sub in bound.items()}
    assert received == TOPIC_BINDINGS
    time.sleep(ABSENT)  # one wait for all: strays would have arrived by now
    assert [sub.get(0.05) for sub in bound.values()] == [[]] * len(bound)


def test_direct_exchanges_need_the_exact_key(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    exchange = _exchange("direct")
    mine = _subscribe(fanout, subscriptions, exchange, "reply-1")
    other = _subscribe(fanout, subscriptions, exchange, "reply-2")

    fanout.publish(exchange, "reply-1", _message("for one"))
    fanout.publish(exchange, "reply-3", _message("for nobody"))

    assert _texts(mine, 1) == ["for one"]
    assert _nothing_more(mine) == []
    assert _nothing_more(other) == []


def test_a_closed_subscription_stops_receiving_and_others_go_on(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    exchange = _exchange("fanout")
    closing = _subscribe(fanout, subscriptions, exchange)
    staying = _subscribe(fanout, subscriptions, exchange)

    closing.close()
    closing.close()  # safe twice
    fanout.publish(exchange, "", _message("after close"))

    assert _texts(staying, 1) == ["after close"]
    assert closing.get(ABSENT) == []


def test_get_waits_at_most_its_timeout(fanout: Fanout, subscriptions: list[Subscription]) -> None:
    subscription = _subscribe(fanout, subscriptions, _exchange("fanout"))
    started = time.monotonic()
    assert subscription.get(0.3) == []
    assert 0.2 <= time.monotonic() - started < 2.0


def test_two_engines_on_one_server_reach_each_other(
    broker: Broker, fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    """A worker and a client each make their own engine on the same broker URL."""
    exchange = _exchange("fanout")
    subscription = _subscribe(fanout, subscriptions, exchange)
    other_broker = type(broker)(broker.url, broker.options)
    sender = other_broker.fanout()
    try:
        sender.publish(exchange, "", _message("across"))
    finally:
        sender.close()
        other_broker.close()

    assert _texts(subscription, 1) == ["across"]


def test_a_routed_publish_reaches_every_subscriber_and_pending_tells_unfinished_reads(
    fanout: Fanout, subscriptions: list[Subscription]
) -> None:
    """``publish_routed`` delivers as ``publish`` does. ``pending`` (the worker asks it before
    a stamped task runs) is False with nothing unread; where the engine tells (RabbitMQ), it
    is True once a message waits, and stays True until the reader calls ``get`` again."""
    exchange = _exchange("fanout")
    first, second = (_subscribe(fanout, subscriptions, exchange) for _ in range(2))
    assert not first.pending()

    fanout.publish_routed(exchange, "", _message("routed"))

    if isinstance(first, AMQPSubscription):
        deadline = time.monotonic() + ARRIVES
        while not first.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.pending()
        assert _texts(first, 1) == ["routed"]
        assert first.pending()  # handed to the reader, not finished with yet
        assert _nothing_more(first) == []
        assert not first.pending()
    else:
        assert _texts(first, 1) == ["routed"]
    assert _texts(second, 1) == ["routed"]
