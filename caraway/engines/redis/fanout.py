"""Broadcast on Redis as kombu does it (docs/celery-wire.md §3.5, §3.6, §7.2).

Fanout and topic exchanges are pub/sub channels ``/<db>.<exchange>`` or
``/<db>.<exchange>/<routing_key>``; a subscriber PSUBSCRIBEs with ``#`` written ``*``. A
direct exchange (the control replies) is a binding table, the set
``_kombu.binding.<exchange>`` of ``routing_key SEP pattern SEP queue`` members: the sender
LPUSHes to every list bound with its routing key, the receiver BRPOPs its own list. The
payload is kombu's envelope in both cases. ``global_keyprefix`` prefixes keys and channels.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import re
import time
import uuid
from typing import Any

import redis

from caraway import serialization
from caraway.engines.base.fanout import Binding, Exchange, Fanout, Subscription, matches
from caraway.engines.redis.broker import SEP, RedisBroker, message_from_envelope
from caraway.engines.redis.client import CONNECTION_ERRORS, translated
from caraway.protocol import Message

#: kombu 5.7 keeps bindings of expiring queues for an hour past their last refresh.
BINDING_TTL_MS = 3_600_000
#: Longest a single BRPOP or pub/sub read blocks, so ``close`` is noticed quickly.
READ_SLICE = 1.0


class RedisFanout(Fanout):
    def __init__(self, broker: RedisBroker) -> None:
        self.target = broker.target
        self.prefix = broker.prefix
        self.options = broker.options
        self._channel = broker.fanout_channel
        self.counts_subscribers = broker.publish_counts_subscribers
        self.client = broker.new_client(
            socket_timeout=READ_SLICE + 10.0, socket_connect_timeout=5.0
        )

    def channel(self, exchange: str, routing_key: str) -> str:
        return self._channel(exchange, routing_key)

    def binding_key(self, exchange: str) -> str:
        return f"{self.prefix}_kombu.binding.{exchange}"

    def envelope(self, exchange: str, routing_key: str, message: Message) -> bytes:
        """kombu's envelope, as a list element or a pub/sub payload carries it."""
        properties = dict(message.properties)
        properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
        properties.setdefault("priority", 0)
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = str(uuid.uuid4())
        return serialization.json_dumps(
            {
                "body": base64.b64encode(message.body).decode("ascii"),
                "content-encoding": message.content_encoding,
                "content-type": message.content_type,
                "headers": message.headers,
                "properties": properties,
            }
        )

    def publish_counted(self, exchange: Exchange, routing_key: str, message: Message) -> int | None:
        """A fanout or topic exchange is one PUBLISH: its reply counts the subscribers that got
        the message (on a cluster only those of one node: not counted there)."""
        if exchange.kind == "direct":
            return super().publish_counted(exchange, routing_key, message)
        reached = self._publish_to_channel(exchange, routing_key, message)
        return reached if self.counts_subscribers else None

    def publish(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        if exchange.kind != "direct":
            self._publish_to_channel(exchange, routing_key, message)
            return
        payload = self.envelope(exchange.name, routing_key, message)
        with translated(self.target, f"to publish to {exchange.name!r}"):
            members = self.client.smembers(self.binding_key(exchange.name))
            queues = []
            for member in members:
                text = member.decode() if isinstance(member, bytes) else str(member)
                key, _pattern, queue = text.split(SEP, 2)
                if key == routing_key:
                    queues.append(queue)
            if queues:  # no binding: dropped, as kombu drops it (docs/celery-wire.md §3.2)
                pipe = self.client.pipeline(transaction=False)
                for queue in queues:
                    pipe.lpush(self.prefix + queue, payload)
                pipe.execute()

    def _publish_to_channel(self, exchange: Exchange, routing_key: str, message: Message) -> int:
        """One PUBLISH to the exchange's channel; the subscribers Redis handed it to."""
        payload = self.envelope(exchange.name, routing_key, message)
        with translated(self.target, f"to publish to {exchange.name!r}"):
            return int(self.client.publish(self.channel(exchange.name, routing_key), payload))

    def bind(self, exchange: str, binding: Binding) -> str:
        """Register the binding as kombu 5.7 does for an expiring queue; returns the member."""
        member = f"{binding.routing_key}{SEP}{SEP}{binding.queue}"
        deadline = int(time.time() * 1000) + BINDING_TTL_MS
        with translated(self.target, f"to bind {binding.queue!r}"):
            # Not a transaction: on a cluster the two keys may sit in two slots.
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(self.binding_key(exchange), member)
            pipe.zadd(f"{self.prefix}_kombu.binding_deadlines", {exchange: deadline}, gt=True)
            pipe.execute()
        return member

    def subscribe(self, exchange: Exchange, binding: Binding) -> Subscription:
        member = self.bind(exchange.name, binding)
        if exchange.kind == "direct":
            return ListSubscription(self, exchange.name, member, self.prefix + binding.queue)
        pattern = subscribe_pattern(self.channel(exchange.name, ""), exchange, binding.routing_key)
        return ChannelSubscription(self, exchange, binding, member, pattern)

    def unbind(self, exchange: str, member: str) -> None:
        # Unreachable now: the binding goes with its deadline instead.
        with contextlib.suppress(*CONNECTION_ERRORS):
            self.client.srem(self.binding_key(exchange), member)

    def close(self) -> None:
        self.client.close()


def subscribe_pattern(base: str, exchange: Exchange, binding_key: str) -> str:
    """A glob receiving at least every channel the binding matches; the subscription drops
    the rest. Redis' ``*`` spans dots and cannot stand for no word, so the glob keeps the
    literal words before the first wildcard and ends in ``*`` (a fanout takes every key)."""
    words = binding_key.split(".") if exchange.kind == "topic" else []
    literal = list(itertools.takewhile(lambda word: word not in ("*", "#"), words))
    if exchange.kind == "topic" and len(literal) == len(words):
        return _escape(f"{base}/{binding_key}" if binding_key else base)
    head = ".".join(literal)
    return _escape(f"{base}/{head}" if head else base) + "*"


def _escape(text: str) -> str:
    """``text`` as a literal in a Redis glob."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class ChannelSubscription(Subscription):
    """PSUBSCRIBE on a connection of its own; messages are read by one thread."""

    def __init__(
        self, fanout: RedisFanout, exchange: Exchange, binding: Binding, member: str, pattern: str
    ) -> None:
        self.fanout = fanout
        self.exchange = exchange
        self.binding = binding
        self.member = member
        self._base = fanout.channel(exchange.name, "")
        # Subscribe confirmations are kept: the first one tells the subscription is live.
        self.pubsub: Any = fanout.client.pubsub()
        with translated(fanout.target, f"to subscribe to {pattern!r}"):
            self.pubsub.psubscribe(pattern)
            # Only once the server confirmed are later messages certain to arrive.
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                reply = self.pubsub.get_message(timeout=0.1)
                if reply is not None and reply.get("type") == "psubscribe":
                    break

    def get(self, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        found: list[Message] = []
        while True:
            remaining = deadline - time.monotonic()
            wait = 0.0 if found else max(0.0, min(remaining, READ_SLICE))
            try:
                raw = self.pubsub.get_message(timeout=wait)
            except CONNECTION_ERRORS:
                time.sleep(min(0.5, max(remaining, 0.0)))  # redis-py resubscribes on next read
                return found
            if raw is None:
                if found or remaining <= 0:
                    return found
                continue
            if raw.get("type") not in ("pmessage", "message") or not self._wanted(raw):
                continue
            message = _decode(raw["data"])
            if message is not None:
                found.append(message)

    def _wanted(self, raw: dict[str, Any]) -> bool:
        """Whether the message's routing key matches the binding: Redis' ``*`` in the
        pattern also spans dots, where AMQP's ``*`` is one word."""
        channel = raw.get("channel") or b""
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if name != self._base and not name.startswith(self._base + "/"):
            return False  # another exchange whose name starts with this one's
        return matches(self.exchange, self.binding.routing_key, name[len(self._base) + 1 :])

    def close(self) -> None:
        self.fanout.unbind(self.exchange.name, self.member)
        with contextlib.suppress(*CONNECTION_ERRORS):
            self.pubsub.close()


class ListSubscription(Subscription):
    """A direct-exchange queue: a list this subscriber BRPOPs, deleted on close."""

    def __init__(self, fanout: RedisFanout, exchange: str, member: str, key: str) -> None:
        self.fanout = fanout
        self.exchange = exchange
        self.member = member
        self.key = key

    def get(self, timeout: float) -> list[Message]:
        client = self.fanout.client
        deadline = time.monotonic() + timeout
        found: list[Message] = []
        with translated(self.fanout.target, f"to read {self.key!r}"):
            while not found:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return found
                popped = client.brpop([self.key], timeout=max(0.01, min(remaining, READ_SLICE)))
                if popped is None:
                    continue
                for payload in [popped[1], *_drain(client, self.key)]:
                    message = _decode(payload)
                    if message is not None:
                        found.append(message)
        return found

    def close(self) -> None:
        self.fanout.unbind(self.exchange, self.member)
        keys = [self.key, *(f"{self.key}{SEP}{step}" for step in (3, 6, 9))]
        with contextlib.suppress(*CONNECTION_ERRORS):
            self.fanout.client.delete(*keys)


def _drain(client: redis.Redis, key: str) -> list[Any]:
    pipe = client.pipeline(transaction=True)
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    items, _ = pipe.execute()
    return list(reversed(items))  # LPUSHed: the oldest is last


def _decode(payload: Any) -> Message | None:
    try:
        return message_from_envelope(serialization.json_loads(payload))
    except Exception:  # a foreign payload on the channel is not ours to fail on
        return None
