"""``redis+cluster://``: the Redis broker with every key of a queue on one hash slot.

A queue's lists, its unacked hash and index, its restore mutex and the fetch receipts all
carry the hash tag ``{<queue>}``, so the broker's Lua scripts (fetch, release, restore) keep
working on one node, and queues spread over the cluster's masters. Where the single-node
layout shares one ``unacked`` hash, each queue has its own here, so a delivery's tag is
``(queue, kombu tag)``. What differs from ``redis://`` (a cluster cannot do it in one step):

* a fetch takes from one queue at a time, and waits on one queue at a time (BRPOP cannot
  span slots), so with several queues the wait is split into slices;
* a batch published to several queues is not one transaction;
* a dead letter is added, then removed from its queue's unacked hash (a crash in between
  leaves a duplicate dead letter, never a lost message).

Celery has no Redis Cluster transport: this layout is caraway's own.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import redis

from caraway.engines.base.broker import Broker, Delivery, Outgoing
from caraway.engines.redis.broker import RedisBroker
from caraway.engines.redis.client import CONNECTION_ERRORS, Lane, RedisTarget, translated
from caraway.engines.redis.cluster.client import (
    ClusterLane,
    ClusterTarget,
    connect_cluster,
    parse_cluster_url,
)

logger = logging.getLogger("caraway.broker")

#: Shortest BRPOP slice per queue when several queues share one wait.
MIN_SLICE = 0.05


class RedisClusterBroker(RedisBroker):
    """The Redis broker on a cluster (the capabilities record is the Redis engine's)."""

    target: ClusterTarget
    #: A PUBLISH counts the subscribers of the node it reached, not the cluster's.
    publish_counts_subscribers = False

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        # One slot for the revocation list and its counter (one script reads both).
        self.revoked_key = f"{self.prefix}{{_caraway.revoked}}"
        self.revoked_count_key = f"{self.prefix}{{_caraway.revoked}}.count"
        self._run_id = uuid.uuid4().hex
        self._consumed: dict[str, None] = {}
        self._receipt_queue = ""
        # Its receipts and tags are per slot: prefork children keep today's hand-off here.
        self.capabilities = replace(self.capabilities, settle_anywhere=False)

    def parse_target(self, url: str) -> RedisTarget:
        return parse_cluster_url(url)

    def new_client(self, **defaults: Any) -> redis.Redis:
        return connect_cluster(self.target, self.options, self._ssl_options, **defaults)

    def new_lane(self) -> Lane:
        return ClusterLane(self.client)

    def new_publisher(self) -> Lane:
        """No one connection reaches every slot: publishes go through the cluster client."""
        return ClusterLane(self.client)

    def uses_tls(self) -> bool:
        return self.target.ssl

    # --- names -------------------------------------------------------------------------

    def list_name(self, queue: str, priority: int | None = 0) -> str:
        """``{queue}`` and ``{queue}\\x06\\x16<step>``: the hash tag puts them on one slot."""
        return super().list_name(f"{{{queue}}}", priority)

    def fanout_channel(self, exchange: str, routing_key: str) -> str:
        """kombu's channel with the exchange as hash tag: redis-py sends a PUBLISH to the
        node of its channel's slot, so one node carries an exchange's messages, in order."""
        base = f"{self.prefix}/{{{self.target.db}.{exchange}}}"
        return f"{base}/{routing_key}" if routing_key else base

    def queue_key(self, queue: str, name: str) -> str:
        """A bookkeeping key of ``queue`` on the slot of its lists."""
        return f"{self.prefix}{{{queue}}}.{name}"

    def _unacked(self, queue: str) -> tuple[str, str]:
        return self.queue_key(queue, "unacked"), self.queue_key(queue, "unacked_index")

    # --- publishing ----------------------------------------------------------------------

    async def publish_async(self, batch: Sequence[Outgoing]) -> None:
        """In a worker thread (the shared default): the Redis broker's asyncio path runs on
        a single-node asyncio client, and this engine builds no asyncio cluster client."""
        await Broker.publish_async(self, batch)

    # --- consuming -------------------------------------------------------------------------

    def _take(self, queues: Sequence[str], limit: int, deadline: float) -> list[Delivery]:
        order = self._order(queues)
        self._consumed.update(dict.fromkeys(order))
        found: list[Delivery] = []
        for queue in order:
            if len(found) >= limit:
                break
            found += self._fetch_from(queue, limit - len(found))
        turn = 0
        while not found:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            queue = order[turn % len(order)]
            turn += 1
            wait = max(MIN_SLICE, min(remaining, self.brpop_timeout / len(order)))
            (popped,) = self._lane.call(("BRPOP", *self._lists(queue), wait))
            if popped is not None:
                found = self._fetch_from(queue, limit, popped[1])
        self._rotate([d.queue for d in found])
        return found

    def _fetch_from(self, queue: str, limit: int, taken: bytes | None = None) -> list[Delivery]:
        """The fetch script on one queue's slot (``taken``: an envelope BRPOP popped)."""
        unacked, index = self._unacked(queue)
        self._receipt = self.queue_key(queue, f"receipt.{self._run_id}")
        self._receipt_queue = queue
        lifetime = max(1, int(self.lease_seconds))
        args: list[Any] = [max(1, limit), repr(self.clock.time()), 1, self._next_call(), lifetime,
                           json.dumps(queue)]  # fmt: skip
        if taken is not None:
            args += [taken, 1]
        keys = [unacked, index, self._receipt, *self._lists(queue)]
        raw = self._lane.script(self._fetch, keys, args)
        return [
            self._delivery(queue, raw[i + 1].decode(), raw[i + 2]) for i in range(0, len(raw), 3)
        ]

    def _delivery(self, queue: str, tag: str, envelope: bytes) -> Delivery:
        delivery = super()._delivery(queue, tag, envelope)
        delivery.tag = (queue, tag)
        return delivery

    def receipt_tags(self, taken: list[str]) -> list[Any]:
        return [(self._receipt_queue, tag) for tag in taken]

    # --- settling ----------------------------------------------------------------------------

    def ack(self, tags: Sequence[Any]) -> None:
        if not tags:
            return
        commands: list[tuple[Any, ...]] = []
        for queue, raw in _by_queue(tags).items():
            unacked, index = self._unacked(queue)
            commands += [("HDEL", unacked, *raw), ("ZREM", index, *raw)]
        self._settle(tags, "ack", lambda: self._send_acks(commands))

    def renew(self, tags: Sequence[Any]) -> None:
        with self._kept_lock:
            tags = [*tags, *(tag for _, kept_tags, _ in self._kept for tag in kept_tags)]
        if not tags:
            return
        now = self.clock.time()
        pipe = self.client.pipeline(transaction=False)
        for queue, raw in _by_queue(tags).items():
            pipe.zadd(self._unacked(queue)[1], dict.fromkeys(raw, now), xx=True)
        try:
            pipe.execute()
        except CONNECTION_ERRORS as exc:  # fetch reports the outage; the next renewal retries
            logger.debug("Cannot renew leases: %s", exc)

    def _entries(self, tags: Sequence[Any]) -> list[tuple[str, bytes | None]]:
        found: dict[Any, bytes | None] = {}
        for queue, raw in _by_queue(tags).items():
            with self._translated("to read unacked messages"):
                values = self.client.hmget(self._unacked(queue)[0], raw)
            for tag, value in zip(raw, values, strict=True):
                found[(queue, tag)] = None if value is None else _bytes(value)
        return [(tag, found[tag]) for tag in tags]

    def _release_now(self, tags: Sequence[Any], delay: float) -> None:
        for queue, raw in _by_queue(tags).items():
            unacked, index = self._unacked(queue)
            if delay > 0:
                score = self.clock.time() + delay - self.lease_seconds
                with self._translated("to release"):
                    self.client.zadd(index, dict.fromkeys(raw, score), xx=True)
                continue
            keys: list[str] = [unacked, index]
            args: list[str | bytes] = []
            with self._translated("to read unacked messages"):
                values = self.client.hmget(unacked, raw)
            for tag, value in zip(raw, values, strict=True):
                target = None if value is None else self._restored(_bytes(value))
                if target is not None:
                    keys.append(target[0])
                    args += [tag, target[1]]
            if args:
                with self._translated("to release"):
                    self._release(keys=keys, args=args)

    def set_aside(self, tag: Any, record: bytes) -> None:
        """The dead letter first, then the delivery forgotten: two slots, two steps."""
        queue, raw = tag
        unacked, index = self._unacked(queue)
        self.client.rpush(self.dead_key, record)
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(index, raw)
        pipe.hdel(unacked, raw)
        pipe.execute()

    def reclaim_orphans(self) -> int:
        """The restore, queue by queue, over the queues this broker has consumed."""
        restored = 0
        for queue in list(self._consumed):
            unacked, index = self._unacked(queue)
            mutex, unreadable = (self.queue_key(queue, n) for n in ("unacked_mutex", "unreadable"))
            restored += self.reclaim(mutex, unacked, index, unreadable)
        return restored

    def restore_each(self, calls: Sequence[tuple[list[str], list[Any]]]) -> int:
        """One call at a time: a cluster pipeline does not load scripts."""
        return sum(int(self._lane.script(self._restore, keys, args)) for keys, args in calls)

    def _translated(self, doing: str) -> AbstractContextManager[None]:
        return translated(self.target, doing)


def _by_queue(tags: Sequence[Any]) -> dict[str, list[str]]:
    """``(queue, tag)`` delivery tags grouped by queue."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for queue, tag in tags:
        grouped[queue].append(tag)
    return grouped


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
