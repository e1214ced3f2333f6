"""``redis://``: kombu's Redis layout, so Celery producers and workers share the queues.

Layout (docs/celery-wire.md §3): a queue is four lists, ``<queue>`` and ``<queue>\\x06\\x16<step>``
for the priority steps 3, 6 and 9; producers LPUSH kombu's envelope JSON, consumers pop the
right end, lower priority steps first. A delivered message waits in the ``unacked`` hash
(``tag -> [envelope, exchange, routing_key]``) with its delivery time in ``unacked_index``
until it is acked; ``reclaim_orphans`` is kombu's restore procedure, which puts back what
nobody renewed within ``visibility_timeout``. Unlike Celery, a caraway worker renews the
entries of every message it holds (ETA tasks included), so a long ETA is never duplicated.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import redis

from caraway import serialization
from caraway.engines.base.broker import (
    Broker,
    BrokerCapabilities,
    DeadLetter,
    Delivery,
    Outgoing,
    QueueStats,
    SettlementKept,
)
from caraway.engines.base.fanout import Fanout
from caraway.engines.base.topology import QueueDeclaration
from caraway.engines.redis.client import (
    CONNECTION_ERRORS,
    Lane,
    LoopClients,
    RedisTarget,
    connect,
    connect_async,
    parse_url,
    ssl_options,
    translated,
    translation,
)
from caraway.engines.redis.exchanges import (
    BroadcastRelay,
    binding_member,
    bound_queues,
    fanout_channel,
)
from caraway.engines.redis.shared import SharedLane
from caraway.exceptions import OperationalError, SerializationError
from caraway.protocol import Message
from caraway.utils.ids import new_id

logger = logging.getLogger("caraway.broker")

T = TypeVar("T")

SEP = "\x06\x16"
#: Properties the envelope writes itself, in kombu's places.
_SET_BY_ENVELOPE = frozenset({"delivery_info", "priority", "body_encoding", "delivery_tag"})
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
#: kombu's defaults; every participant sharing the broker must agree on them.
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
MUTEX_EXPIRE_MS = 300_000
#: Longest single BRPOP: bounds how long a lost server goes unnoticed (kombu's default).
DEFAULT_BRPOP_TIMEOUT = 1.0
#: Revocations kept for workers that start later (the oldest are dropped beyond this).
REVOKED_KEEP = 50_000
#: Settlements (acks, releases, dead letters) kept while Redis is away; past this many the
#: oldest are dropped, and their messages run again after the visibility timeout.
MAX_KEPT = 10_000

# Pops up to ARGV[1] envelopes -- step-major, round-robin across queues within a step -- and
# records each in unacked/unacked_index in the same atomic step, so a consumer that dies
# after the pop loses nothing: the restore procedure finds the message there.
# It also writes a receipt (the call's number, then the tags it took, space-separated) to
# the fetching broker's own key: when the reply is lost with the connection, the broker finds
# there what the call took and gives it back at once, not after the visibility timeout.
# KEYS: unacked, unacked_index, receipt, then the lists (every queue's step 0, then step 3...)
# ARGV: limit, now, queue count, call number, receipt lifetime (s), the JSON string of each
#       queue name, and optionally an envelope BRPOP already took with its queue's index (it
#       is recorded first).
FETCH = """
local limit = tonumber(ARGV[1])
local now = ARGV[2]
local nq = tonumber(ARGV[3])
local tags = {}
local out = {}
local taken = 0
local function record(env, q)
  -- kombu writes the tag last: read it off the tail, decode the JSON only otherwise.
  local tag = string.match(string.sub(env, -64), '"delivery_tag": ?"([%w%-]+)"}}$')
  if not tag then
    local ok, doc = pcall(cjson.decode, env)
    if ok and type(doc) == 'table' and type(doc.properties) == 'table' then
      tag = doc.properties.delivery_tag
    end
  end
  if type(tag) ~= 'string' then
    tag = 'caraway-' .. redis.sha1hex(env) .. '-' .. now .. '-' .. taken
  end
  redis.call('ZADD', KEYS[2], now, tag)
  redis.call('HSET', KEYS[1], tag, '[' .. env .. ', "", ' .. ARGV[5 + q] .. ']')
  taken = taken + 1
  tags[#tags + 1] = tag
  out[#out + 1] = q
  out[#out + 1] = tag
  out[#out + 1] = env
end
if ARGV[6 + nq] then
  record(ARGV[6 + nq], tonumber(ARGV[7 + nq]))
end
local steps = (#KEYS - 3) / nq
for s = 0, steps - 1 do
  local live = {}
  for q = 1, nq do live[q] = q end
  while #live > 0 and taken < limit do
    local still = {}
    for _, q in ipairs(live) do
      if taken >= limit then break end
      local env = redis.call('RPOP', KEYS[3 + s * nq + q])
      if env then
        record(env, q)
        still[#still + 1] = q
      end
    end
    live = still
  end
end
if taken > 0 then
  -- The same call run again (the client retried it after losing the reply): add to it.
  local head = ARGV[4] .. ' '
  local kept = redis.call('GET', KEYS[3])
  if not kept or string.sub(kept, 1, #head) ~= head then kept = ARGV[4] end
  redis.call('SET', KEYS[3], kept .. ' ' .. table.concat(tags, ' '), 'EX', ARGV[5])
end
return out
"""

# Gives messages back: each one still unacked moves to the consuming end of its list.
# KEYS: unacked, unacked_index, then the list of each message; ARGV: tag, envelope, ...
RELEASE = """
local moved = 0
for i = 3, #KEYS do
  local tag = ARGV[(i - 3) * 2 + 1]
  if redis.call('HDEL', KEYS[1], tag) == 1 then
    redis.call('ZREM', KEYS[2], tag)
    redis.call('RPUSH', KEYS[i], ARGV[(i - 3) * 2 + 2])
    moved = moved + 1
  end
end
return moved
"""

# One step of the restore procedure, as a compare-and-move: the entry goes back only if it
# is still the one read and nobody renewed it since (kombu uses WATCH/MULTI for the first
# check and has no renewals). An index entry without its hash entry is dropped, as kombu does.
# KEYS: unacked, unacked_index, list; ARGV: tag, hash value read, newest score, new envelope.
RESTORE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if current ~= ARGV[2] or (score and tonumber(score) > tonumber(ARGV[3])) then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[4])
return 1
"""

# Releases unacked_mutex only if this consumer still holds it (its lock may have expired).
RELEASE_MUTEX = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Revocations after an absolute cursor. The list keeps the newest REVOKED_KEEP entries and
# the counter counts every one ever added, so cursors survive the trimming.
# KEYS: list, counter; ARGV: cursor. Returns {total, {entries...}}.
REVOCATIONS = """
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = total - redis.call('LLEN', KEYS[1])
local cursor = tonumber(ARGV[1])
if cursor > total or cursor < first then cursor = first end
if cursor >= total then return {total, {}} end
return {total, redis.call('LRANGE', KEYS[1], cursor - first, -1)}
"""


class RedisBroker(Broker):
    capabilities = BrokerCapabilities(
        leases=True, lease_seconds=DEFAULT_VISIBILITY_TIMEOUT, reclaims_orphans=True,
        priority_order="low-first", broadcast=True, exchanges=True, settle_anywhere=True,
    )  # fmt: skip

    #: PUBLISH replies with the number of subscribers reached (one server sees them all).
    publish_counts_subscribers = True

    def uses_tls(self) -> bool:
        return self.url.partition("://")[0].lower() == "rediss"

    def fanout(self) -> Fanout:
        # Lazy, breaks the cycle broker -> fanout -> broker (the fanout module imports this one).
        from caraway.engines.redis.fanout import RedisFanout

        return RedisFanout(self)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        opts = self.options
        self.target = self.parse_target(url)
        self.prefix = str(opts.get("global_keyprefix") or "")
        self.sep = str(opts.get("sep", SEP))
        self.priority_steps = sorted(
            int(s) for s in opts.get("priority_steps", DEFAULT_PRIORITY_STEPS)
        )
        self.lease_seconds = float(opts.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT))
        self.capabilities = replace(self.capabilities, lease_seconds=self.lease_seconds)
        self.brpop_timeout = float(
            opts.get("brpop_timeout", opts.get("polling_interval") or DEFAULT_BRPOP_TIMEOUT)
        )
        self.mutex_expire_ms = int(float(opts.get("unacked_mutex_expire", 300)) * 1000)
        self.unacked = self.prefix + str(opts.get("unacked_key", "unacked"))
        self.unacked_index = self.prefix + str(opts.get("unacked_index_key", "unacked_index"))
        self.unacked_mutex = self.prefix + str(opts.get("unacked_mutex_key", "unacked_mutex"))
        self.dead_key = self.prefix + "_caraway.dead_letters"
        self.revoked_key = self.prefix + "_caraway.revoked"
        self.revoked_count_key = self.prefix + "_caraway.revoked.count"
        # The socket timeout must outlast the longest BRPOP we send.
        self._ssl_options = ssl_options(opts.get("broker_use_ssl"))
        self.client = self.new_client(
            socket_timeout=max(10.0, self.brpop_timeout + 5.0),
            socket_connect_timeout=float(opts.get("broker_connection_timeout") or 4.0),
        )
        self._fetch = self.client.register_script(FETCH)
        self._release = self.client.register_script(RELEASE)
        self._restore = self.client.register_script(RESTORE)
        self._release_mutex = self.client.register_script(RELEASE_MUTEX)
        self._revocations = self.client.register_script(REVOCATIONS)
        self._lane = self.new_lane()
        # Publishes from every thread share one connection and its round trips.
        self._publisher = self.new_publisher()
        # Settlements that found Redis away: (when, tags, how to send it again), oldest first.
        self._kept: collections.deque[tuple[float, tuple[Any, ...], Callable[[], object]]]
        self._kept = collections.deque()
        self._kept_lock = threading.Lock()
        self._kept_dropped = 0
        self._drops_seen = 0
        # The fetch script's receipt (see FETCH), and the number of the call whose reply a
        # dropped connection took, if any.
        self._receipt = f"{self.prefix}caraway.receipt.{uuid.uuid4().hex}"
        self._calls = 0
        self._unanswered: int | None = None
        self._async_clients = LoopClients(
            lambda: connect_async(self.target, self.options, self._ssl_options)
        )
        self._declared: set[str] = set()
        # Broadcast queues this broker consumes (their relays), and the bindings of queues
        # that go with their consumer (auto-delete), removed on close.
        self._relays: dict[str, BroadcastRelay] = {}
        self._transient: list[QueueDeclaration] = []
        self._list_names: dict[tuple[str, int | None], str] = {}
        self._lock = threading.Lock()
        self._cycle: list[str] = []

    # --- connections (a cluster engine overrides these) ---------------------------------

    def parse_target(self, url: str) -> RedisTarget:
        return parse_url(url)

    def new_client(self, **defaults: Any) -> redis.Redis:
        """A client of this broker's server with its options (nothing connects yet)."""
        return connect(self.target, self.options, ssl_options=self._ssl_options, **defaults)

    def new_lane(self) -> Lane:
        return Lane(self.client, on_lost=self._unconfirmed_acks)

    def new_publisher(self) -> SharedLane | Lane:
        """What ``publish`` writes on: one connection whose round trips concurrent
        publishers share."""
        return SharedLane(self.client)

    # --- names -------------------------------------------------------------------------

    def step_for(self, priority: int | None) -> int:
        """kombu's mapping: clamp to 0-9, then the largest step not above the priority."""
        value = min(max(int(priority or 0), 0), 9)
        return max((s for s in self.priority_steps if s <= value), default=self.priority_steps[0])

    def list_name(self, queue: str, priority: int | None = 0) -> str:
        """The list holding ``queue``'s messages of ``priority`` (without the key prefix)."""
        names = self._list_names
        name = names.get((queue, priority))
        if name is None:
            step = self.step_for(priority)
            name = names[(queue, priority)] = f"{queue}{self.sep}{step}" if step else queue
        return name

    def fanout_channel(self, exchange: str, routing_key: str) -> str:
        """The pub/sub channel of a fanout or topic exchange (kombu's name)."""
        return fanout_channel(self.prefix, self.target.db, exchange, routing_key)

    def _lists(self, queue: str) -> list[str]:
        names = dict.fromkeys(self.prefix + self.list_name(queue, s) for s in self.priority_steps)
        return list(names)

    def describe(self) -> str:
        return self.target.masked

    # --- publishing ----------------------------------------------------------------------

    def envelope(
        self,
        message: Message,
        queue: str,
        priority: int | None = None,
        exchange: str = "",
        routing_key: str | None = None,
    ) -> dict[str, Any]:
        """kombu's envelope (docs/celery-wire.md §3.3), keys and properties in kombu's order."""
        props = message.properties
        properties = {key: value for key, value in props.items() if key not in _SET_BY_ENVELOPE}
        properties["delivery_info"] = {
            "exchange": exchange, "routing_key": queue if routing_key is None else routing_key,
        }  # fmt: skip
        properties["priority"] = props.get("priority", priority or 0)
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = new_id()
        return {
            # base64.b64encode's own call, without its Python wrapper (same bytes)
            "body": binascii.b2a_base64(message.body, newline=False).decode("ascii"),
            "content-encoding": message.content_encoding,
            "content-type": message.content_type,
            "headers": message.headers,
            "properties": properties,
        }

    def _bindings(self, queue: str) -> list[list[Any]]:
        """kombu 5.7's two binding sets of the default exchange (docs/celery-wire.md §3.2, §3.5)."""
        member = f"{queue}{self.sep}{self.sep}{queue}"
        return [
            ["SADD", f"{self.prefix}_kombu.binding.{queue}", member],
            ["SADD", f"{self.prefix}_kombu.binding_permanent.{queue}", member],
        ]

    def declare(self, queue: str) -> None:
        with translated(self.target, f"to declare {queue!r}"):
            self._lane.call(["MULTI"], *self._bindings(queue), ["EXEC"])
        self._declared.add(queue)

    def _bound(self, declaration: QueueDeclaration) -> list[list[Any]]:
        """The binding of a queue to its exchange, in kombu 5.7's two sets."""
        member = binding_member(declaration, self.sep)
        return [
            ["SADD", f"{self.prefix}_kombu.binding.{declaration.exchange}", member],
            ["SADD", f"{self.prefix}_kombu.binding_permanent.{declaration.exchange}", member],
        ]

    def declare_bound(self, declaration: QueueDeclaration) -> None:
        """Write the binding; a broadcast queue also starts relaying its exchange's channel
        into its list (pub/sub reaches only subscribers that are there when it is sent)."""
        queue = declaration.queue
        with translated(self.target, f"to declare {queue!r}"):
            self._lane.call(["MULTI"], *self._bound(declaration), ["EXEC"])
            if declaration.auto_delete:
                self._transient.append(declaration)
            if declaration.broadcast and queue not in self._relays:
                channel = self.fanout_channel(declaration.exchange, declaration.routing_key)
                self._relays[queue] = BroadcastRelay(
                    self.new_client(), channel,
                    partial(self._relay, queue), f"{channel} -> {queue}",
                )  # fmt: skip
        self._declared.add(queue)

    def _relay(self, queue: str, payload: bytes) -> None:
        """A message published on a broadcast queue's exchange, into the queue's list, with
        a delivery tag of its own (every worker got the same one, and the unacked hash they
        share is keyed by it)."""
        try:
            envelope = serialization.json_loads(payload)
            properties = envelope["properties"]
            properties["delivery_tag"] = new_id()
            priority = int(properties.get("priority") or 0)
            payload = serialization.json_dumps_compact(envelope)
        except (SerializationError, KeyError, TypeError, ValueError, AttributeError):
            priority = 0  # the worker sets a foreign entry aside when it takes it
        self.client.lpush(self.prefix + self.list_name(queue, priority), payload)

    def publish(self, batch: Sequence[Outgoing]) -> None:
        """LPUSH the envelopes, after the bindings of queues new to this process: one round
        trip, one LPUSH per run of messages bound for the same list (order kept: LPUSH
        puts its values at the head in turn, and consumers pop the tail). Messages for a
        direct or topic exchange first read its binding table (one more round trip).
        Threads publishing at once share the round trip (``SharedLane``); each returns once
        Redis answered its own commands."""
        if len(batch) == 1:  # a delay(): one LPUSH on a known queue, when nothing else is due
            item = batch[0]
            if not item.exchange and item.declaration is None and item.queue in self._declared:
                key = self.prefix + self.list_name(item.queue, item.priority)
                try:
                    self._publisher.call(("LPUSH", key, self._encoded(item)))
                except redis.RedisError as exc:
                    raise translation(self.target, "to publish", exc) from exc
                return
        if not batch:
            return
        exchanges = _routed_exchanges(batch)
        tables: dict[str, Any] = {}
        if exchanges:
            pipe = self.client.pipeline(transaction=False)
            for exchange in exchanges:
                pipe.smembers(f"{self.prefix}_kombu.binding.{exchange}")
            with translated(self.target, "to read bindings"):
                tables = dict(zip(exchanges, pipe.execute(), strict=True))
        fresh, commands = self._publish_commands(batch, tables)
        with translated(self.target, "to publish"):
            self._publisher.call(*commands)
        self._declared.update(fresh)

    async def publish_async(self, batch: Sequence[Outgoing]) -> None:
        """``publish`` on redis-py's asyncio client: the same commands in one transaction."""
        if not batch:
            return
        exchanges = _routed_exchanges(batch)
        tables: dict[str, Any] = {}
        with translated(self.target, "to publish"):
            client = await self._async_clients.get()
            if exchanges:
                async with client.pipeline(transaction=False) as pipe:
                    for exchange in exchanges:
                        pipe.smembers(f"{self.prefix}_kombu.binding.{exchange}")
                    tables = dict(zip(exchanges, await pipe.execute(), strict=True))
            fresh, commands = self._publish_commands(batch, tables)
            async with client.pipeline(transaction=True) as pipe:
                for command in commands:
                    if command[0] not in ("MULTI", "EXEC"):
                        pipe.execute_command(*command)
                await pipe.execute()
        self._declared.update(fresh)

    def _publish_commands(
        self, batch: Sequence[Outgoing], tables: Mapping[str, Any]
    ) -> tuple[list[str], list[list[Any]]]:
        """(queues declared by this batch, its commands), given the binding tables of the
        direct and topic exchanges it is sent to."""
        plain = [i.queue for i in batch if not i.exchange and i.declaration is None]
        fresh = list(dict.fromkeys(queue for queue in plain if queue not in self._declared))
        commands = [command for queue in fresh for command in self._bindings(queue)]
        for bound in dict.fromkeys(i.declaration for i in batch if i.declaration is not None):
            if bound.queue not in self._declared:
                fresh.append(bound.queue)
                commands.extend(self._bound(bound))
        last: list[Any] = []
        for item in batch:
            if item.exchange_type == "fanout" and item.exchange:
                channel = self.fanout_channel(item.exchange, item.routing_key)
                commands.append(["PUBLISH", channel, self._encoded(item)])
                last = []
                continue
            for queue in self._destinations(item, tables):
                # Each copy its own delivery tag: consumers share the unacked hash by tag.
                envelope = self._encoded(item)
                key = self.prefix + self.list_name(queue, item.priority)
                if last and last[1] == key:
                    last.append(envelope)
                else:
                    last = ["LPUSH", key, envelope]
                    commands.append(last)
        if len(commands) > 1:  # all or nothing
            commands = [["MULTI"], *commands, ["EXEC"]]
        return fresh, commands

    def _encoded(self, item: Outgoing) -> bytes:
        return serialization.json_dumps_compact(
            self.envelope(
                item.message, item.queue, item.priority, item.exchange,
                item.routing_key if item.exchange else None,
            )
        )  # fmt: skip

    def _destinations(self, item: Outgoing, tables: Mapping[str, Any]) -> list[str]:
        """The queues ``item`` goes to: its queue, or those bound to its exchange that its
        routing key matches. None bound: kombu drops the message; we say so in the log."""
        if not item.exchange:
            return [item.queue]
        queues = bound_queues(
            tables.get(item.exchange) or (), item.exchange_type, item.routing_key, self.sep
        )
        if not queues:
            logger.warning(
                "No queue is bound to the %s exchange %r with a key matching %r: the message"
                " of task %s is dropped, as on RabbitMQ", item.exchange_type, item.exchange,
                item.routing_key, item.message.headers.get("id"),
            )  # fmt: skip
        return queues

    # --- consuming -------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Pop and record up to ``limit`` messages; block (BRPOP) when none is ready.

        A lost server raises ``Unreachable``: the worker's retry policy decides what next.
        """
        deadline = time.monotonic() + timeout
        if not queues:
            time.sleep(max(0.0, timeout))
            return []
        with translated(self.target, "to fetch"):
            if self._unanswered is not None:
                self._recover_unanswered(self._unanswered, ())
            if self._kept:
                self._send_kept()
            drops = self._lane.drops
            try:
                found = self._take(queues, limit, deadline)
            except CONNECTION_ERRORS:
                self._unanswered = self._calls  # its script may have run: read the receipt
                raise
            if self._lane.drops != drops:  # a reply lost, the call sent again: what did it take?
                self._recover_unanswered(self._calls, {d.tag for d in found})
        if self._lane.drops != self._drops_seen:
            self._resend_owed()
        return found

    def connect(self) -> None:
        with translated(self.target, "to connect"):
            self.client.ping()

    def _order(self, queues: Sequence[str]) -> list[str]:
        """Queues in round-robin order: the one that last delivered goes to the end."""
        with self._lock:
            if sorted(self._cycle) != sorted(queues):
                self._cycle = list(dict.fromkeys(queues))
            return list(self._cycle)

    def _rotate(self, delivered: Sequence[str]) -> None:
        with self._lock:
            for queue in dict.fromkeys(delivered):
                if queue in self._cycle:
                    self._cycle.remove(queue)
                    self._cycle.append(queue)

    def _take(self, queues: Sequence[str], limit: int, deadline: float) -> list[Delivery]:
        order = self._order(queues)
        lists = [self.prefix + self.list_name(q, s) for s in self.priority_steps for q in order]
        names = [json.dumps(q) for q in order]
        lifetime = max(1, int(self.lease_seconds))
        base_args: list[Any] = [max(1, limit), 0.0, len(order), 0, lifetime, *names]
        keys = [self.unacked, self.unacked_index, self._receipt, *lists]
        base_args[1], base_args[3] = repr(self.clock.time()), self._next_call()
        raw = self._lane.script(self._fetch, keys, base_args)
        while not raw:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            (popped,) = self._lane.call(("BRPOP", *lists, min(remaining, self.brpop_timeout)))
            if popped is None:
                continue
            key, envelope = popped
            queue_index = lists.index(_text(key)) % len(order) + 1
            base_args[1], base_args[3] = repr(self.clock.time()), self._next_call()
            raw = self._lane.script(self._fetch, keys, [*base_args, envelope, queue_index])
        deliveries = [
            self._delivery(order[int(raw[i]) - 1], raw[i + 1].decode(), raw[i + 2])
            for i in range(0, len(raw), 3)
        ]
        self._rotate([d.queue for d in deliveries])
        return deliveries

    def _next_call(self) -> int:
        self._calls += 1
        return self._calls

    def _recover_unanswered(self, call: int, received: Collection[Any]) -> None:
        """A reply to fetch call ``call`` may have been lost with the connection. If the
        script ran, the messages it took and we did not receive wait in ``unacked`` under
        nobody's lease: give them back now, not after the visibility timeout."""
        receipt = self.client.get(self._receipt)
        self._unanswered = None
        number, *taken = _text(receipt).split(" ") if receipt else ("",)
        tags = [tag for tag in self.receipt_tags(taken) if tag not in received]
        if number != str(call) or not tags:
            return  # the call never ran, took nothing, or its reply came after all
        logger.info(
            "The reply to a fetch was lost with the connection: giving back its %d"
            " message(s)", len(tags),
        )  # fmt: skip
        self._release_now(tags, 0.0)

    def receipt_tags(self, taken: list[str]) -> list[Any]:
        """The delivery tags of the entries a fetch receipt names."""
        return taken

    def fetch_receipt(self) -> Any:
        return self._receipt

    def tags_in_receipt(self, receipt: Any) -> list[Any]:
        with translated(self.target, "to read a fetch receipt"):
            value = self.client.get(receipt)
        _, *taken = _text(value).split(" ") if value else ("",)
        return self.receipt_tags(taken)

    def _delivery(self, queue: str, tag: str, envelope: bytes) -> Delivery:
        try:
            doc = serialization.json_loads(envelope)
            message = message_from_envelope(doc)
            redelivered = bool(
                doc["headers"].get("redelivered")
                or (doc["properties"].get("delivery_info") or {}).get("redelivered")
            )
        except (SerializationError, KeyError, TypeError, AttributeError,
                ValueError, binascii.Error) as exc:  # fmt: skip
            # Set aside by the worker with the reason: the raw entry stays in the body.
            message = Message({"id": tag}, {"delivery_tag": tag}, envelope, "", "binary")
            return Delivery(message, queue, tag, problem=_not_an_envelope(queue, exc))
        info = doc["properties"].get("delivery_info") or {}
        return Delivery(
            message, queue, tag, redelivered,
            exchange=str(info.get("exchange") or ""), routing_key=info.get("routing_key"),
            raw=envelope,
        )  # fmt: skip

    def portable(self, delivery: Delivery) -> Any:
        """(queue, tag, envelope): the bytes as Redis gave them, decoded again only when
        the supervisor needs the message (a lost child, ``inspect``)."""
        if delivery.raw is None:
            return delivery
        return delivery.queue, delivery.tag, delivery.raw

    def from_portable(self, data: Any) -> Delivery:
        if isinstance(data, Delivery):
            return data
        queue, tag, envelope = data
        return self._delivery(queue, tag, envelope)

    def ack(self, tags: Sequence[Any]) -> None:
        """Forget delivered messages, pipelined: the thread does not wait for Redis.

        kombu waits for each ack (MULTI ZREM HDEL EXEC). Not waiting cannot lose a task: an
        ack that never lands leaves the message in ``unacked``, and it runs again, as it
        would after any crash before the ack. An ack that finds Redis away, or whose reply
        a dropped connection took, is kept and sent again once Redis is back (it is
        idempotent), so a short outage repeats no finished task. The hash entry goes first,
        so a crash between the two leaves an index entry the restore drops, never an entry
        it cannot find.
        """
        if not tags:
            return
        commands = (("HDEL", self.unacked, *tags), ("ZREM", self.unacked_index, *tags))
        self._settle(tags, "ack", partial(self._send_acks, commands))

    def _send_acks(self, commands: Sequence[Sequence[Any]]) -> None:
        with translated(self.target, "to ack"):
            self._lane.send(*commands)

    def _entries(self, tags: Sequence[Any]) -> list[tuple[str, bytes | None]]:
        with translated(self.target, "to read unacked messages"):
            values = self.client.hmget(self.unacked, list(tags))
        return [(str(tag), _bytes(value)) for tag, value in zip(tags, values, strict=True)]

    def release(self, tags: Sequence[Any], delay: float = 0.0) -> None:
        """Back to the consuming end of its list, marked redelivered (kombu's restore).

        With a ``delay``, the message stays unacked with its delivery time set so that the
        restore procedure of any consumer (reclaim runs every few seconds) gives it back
        ``delay`` seconds from now.
        """
        if tags:
            self._settle(tags, "release", partial(self._release_now, tags, delay))

    def _release_now(self, tags: Sequence[Any], delay: float) -> None:
        if delay > 0:
            score = self.clock.time() + delay - self.lease_seconds
            with translated(self.target, "to release"):
                self.client.zadd(self.unacked_index, dict.fromkeys(tags, score), xx=True)
            return
        keys: list[str] = [self.unacked, self.unacked_index]
        args: list[str | bytes] = []
        for tag, value in self._entries(tags):
            if value is None:
                continue
            target = self._restored(value)
            if target is None:
                continue
            keys.append(target[0])
            args += [tag, target[1]]
        if args:
            with translated(self.target, "to release"):
                self._release(keys=keys, args=args)

    def _restored(self, value: bytes) -> tuple[str, bytes] | None:
        """(list key, envelope marked redelivered) for an ``unacked`` hash value."""
        try:
            envelope, _exchange, routing_key = serialization.json_loads(value)
            envelope["headers"]["redelivered"] = True
            envelope["properties"]["delivery_info"]["redelivered"] = True
            priority = envelope["properties"].get("priority")
        except (SerializationError, ValueError, TypeError, KeyError):
            logger.error("Dropping an unreadable unacked entry: %r", value[:200])
            return None
        key = self.prefix + self.list_name(str(routing_key), priority)
        return key, serialization.json_dumps(envelope)

    def renew(self, tags: Sequence[Any]) -> None:
        """Refresh the delivery time of held messages, so no restore takes them (XX: held
        ones only; a message restored meanwhile is not brought back into the index).
        Messages whose settlement is kept until Redis is back are held too."""
        with self._kept_lock:
            tags = [*tags, *(tag for _, kept_tags, _ in self._kept for tag in kept_tags)]
        if not tags:
            return
        try:
            self.client.zadd(self.unacked_index, dict.fromkeys(tags, self.clock.time()), xx=True)
        except CONNECTION_ERRORS as exc:  # fetch reports the outage; the next renewal retries
            logger.debug("Cannot renew leases: %s", exc)

    def reclaim_orphans(self) -> int:
        """kombu's restore: put back every message unacked for longer than the timeout."""
        unreadable = self.prefix + "_caraway.unreadable"
        return self.reclaim(self.unacked_mutex, self.unacked, self.unacked_index, unreadable)

    def reclaim(self, mutex: str, unacked: str, index: str, unreadable: str) -> int:
        """The restore over one unacked hash and its index, under ``mutex``; entries that
        cannot be read go to the list ``unreadable``."""
        token = uuid.uuid4().hex
        try:
            if not self.client.set(mutex, token, nx=True, px=self.mutex_expire_ms):
                return 0
            try:
                return self._restore_visible(unacked, index, unreadable)
            finally:
                self._release_mutex(keys=[mutex], args=[token])
        except CONNECTION_ERRORS as exc:
            logger.debug("Cannot restore unacked messages: %s", exc)
            return 0

    def _restore_visible(self, unacked: str, index: str, unreadable: str) -> int:
        ceiling = self.clock.time() - self.lease_seconds
        tags = [_text(t) for t in self.client.zrange(index, ceiling, 0, desc=True, byscore=True)]
        if not tags:
            return 0
        with translated(self.target, "to read unacked messages"):
            values = self.client.hmget(unacked, tags)
        calls: list[tuple[list[str], list[Any]]] = []
        for tag, raw in zip(tags, values, strict=True):
            value = _bytes(raw)
            target = self._restored(value) if value is not None else None
            list_key, envelope = target or (unreadable, b"")
            calls.append(([unacked, index, list_key], [tag, value or b"", repr(ceiling), envelope]))
        return self.restore_each(calls)

    def restore_each(self, calls: Sequence[tuple[list[str], list[Any]]]) -> int:
        """Run the restore script once per (keys, args), pipelined; how many moved."""
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            self._restore(keys=keys, args=args, client=pipe)
        return sum(int(n) for n in pipe.execute())

    def dead_letter(self, delivery: Delivery, reason: str) -> str:
        attempt = partial(self._dead_letter_now, delivery, reason)
        return self._settle([delivery.tag], "dead letter", attempt)

    def _dead_letter_now(self, delivery: Delivery, reason: str) -> str:
        ((_, value),) = self._entries([delivery.tag])
        envelope: Any = None
        if delivery.problem is not None:  # kept as it was pushed, not as unacked wraps it
            envelope = delivery.message.body.decode("utf-8", "replace")
        elif value is not None:
            try:
                envelope = serialization.json_loads(value)[0]
            except (SerializationError, ValueError, TypeError, KeyError):
                envelope = value.decode("utf-8", "replace")
        if envelope is None:
            envelope = self.envelope(delivery.message, delivery.queue, delivery.message.priority)
        record = {"envelope": envelope, "queue": delivery.queue, "reason": reason,
                  "failed_at": self.clock.time()}  # fmt: skip
        with translated(self.target, "to set a message aside"):
            self.set_aside(delivery.tag, serialization.json_dumps(record))
        return f"the Redis list {self.dead_key!r} at {self.target.masked}"

    def set_aside(self, tag: Any, record: bytes) -> None:
        """Add ``record`` to the dead letters and forget the delivery, in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.dead_key, record)
        pipe.zrem(self.unacked_index, tag)
        pipe.hdel(self.unacked, tag)
        pipe.execute()

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with translated(self.target, "to read dead letters"):
            rows: list[Any] = self.client.lrange(self.dead_key, 0, max(limit, 1) - 1)
        return [_dead_letter(row) for row in rows]

    def settle_dead_letter(self, key: str, requeue: bool) -> bool:
        with translated(self.target, "to read dead letters"):
            rows: list[Any] = self.client.lrange(self.dead_key, 0, -1)
        row = next((row for row in rows if _dead_key(row) == key), None)
        if row is None:
            return False
        with translated(self.target, "to settle a dead letter"):
            if not self.client.lrem(self.dead_key, 1, row):
                return False  # another dashboard took it first
        if requeue:
            letter = _dead_letter(row)
            try:
                self.publish([Outgoing(letter.message, letter.queue, letter.message.priority or 0)])
            except BaseException:
                self.client.rpush(self.dead_key, row)  # kept rather than lost
                raise
        return True

    def purge(self, queue: str) -> int:
        lists = self._lists(queue)
        pipe = self.client.pipeline(transaction=True)
        for key in lists:
            pipe.llen(key)
        pipe.delete(*lists)
        with translated(self.target, f"to purge {queue!r}"):
            counts = pipe.execute()
        return sum(int(n) for n in counts[:-1])

    def size(self, queue: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self._lists(queue):
            pipe.llen(key)
        with translated(self.target, f"to count {queue!r}"):
            return sum(int(n) for n in pipe.execute())

    def queue_stats(self, queue: str) -> QueueStats:
        """Each priority lane's length and the message next out of it (the list's tail:
        kombu pushes on the left and pops on the right), read in one round trip."""
        steps = {self.list_name(queue, step): step for step in self.priority_steps}
        pipe = self.client.pipeline(transaction=False)
        for name in steps:
            pipe.llen(self.prefix + name)
            pipe.lindex(self.prefix + name, -1)
        with translated(self.target, f"to count {queue!r}"):
            answers = pipe.execute()
        by_priority = {step: int(n) for step, n in zip(steps.values(), answers[::2], strict=True)}
        next_ids = tuple(filter(None, (_task_id(raw) for raw in answers[1::2] if raw)))
        return QueueStats(sum(by_priority.values()), by_priority, next_ids=next_ids, unknown={
            "consumers": "Redis keeps no list of consumers: workers pop from the lists",
            "oldest_age": "Redis lists keep no publish time with a message",
        })  # fmt: skip

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        if not task_ids:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.revoked_key, *(json.dumps([t, bool(terminate)]) for t in task_ids))
        pipe.ltrim(self.revoked_key, -REVOKED_KEEP, -1)
        pipe.incrby(self.revoked_count_key, len(task_ids))
        with translated(self.target, "to revoke"):
            pipe.execute()

    def revocations(self, cursor: int) -> tuple[list[tuple[str, bool]], int]:
        try:
            total, rows = self._revocations(
                keys=[self.revoked_key, self.revoked_count_key], args=[cursor]
            )
        except CONNECTION_ERRORS:  # the worker polls often; fetch reports the outage
            return [], cursor
        except redis.RedisError as exc:
            with translated(self.target, "to read revocations"):
                raise exc
        seen = [json.loads(row) for row in rows]
        return [(str(task_id), bool(term)) for task_id, term in seen], int(total)

    # --- settlements kept while Redis is away ------------------------------------------------

    def _settle(self, tags: Sequence[Any], what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` now; if Redis is away, keep it to send again once Redis is back."""
        try:
            return attempt()
        except OperationalError as exc:
            if not isinstance(exc.__cause__, CONNECTION_ERRORS):
                raise
            self._keep(tags, attempt)
            raise SettlementKept(
                f"Redis at {self.target.masked} is away: the {what} is kept and sent once it"
                " is back"
            ) from exc.__cause__

    def _keep(self, tags: Sequence[Any], attempt: Callable[[], object]) -> None:
        with self._kept_lock:
            if len(self._kept) >= MAX_KEPT:
                self._kept.popleft()
                self._kept_dropped += 1
            self._kept.append((time.monotonic(), tuple(tags), attempt))

    def _unconfirmed_acks(self, commands: list[Sequence[Any]]) -> None:
        """The lane's pipelined acks whose replies the dropped connection took: kept (they
        are idempotent, so sending one that did land is harmless)."""
        tags = [tag for command in commands if command[0] == "HDEL" for tag in command[2:]]
        logger.info(
            "The connection to Redis dropped before %d ack(s) were confirmed; they are kept"
            " and sent again once Redis is back", len(tags),
        )  # fmt: skip
        self._keep(tags, partial(self._send_acks, commands))

    def _resend_owed(self) -> None:
        """Redis is back after a dropped connection: the acks other threads sent and have
        not seen answered may have died with it (a thread that stays idle would not find out),
        so they are kept to be sent again (idempotent); a duplicate HDEL costs nothing."""
        self._drops_seen = self._lane.drops
        commands = self._lane.owed()
        if commands:
            self._unconfirmed_acks(commands)

    def _send_kept(self) -> None:
        """Send the kept settlements, oldest first; Redis away again: keep the rest and
        raise its connection error."""
        with self._kept_lock:
            kept, self._kept = self._kept, collections.deque()
            dropped, self._kept_dropped = self._kept_dropped, 0
        sent = stale = 0
        # Kept longer than a lease: another worker may have restored and taken the message
        # since, so settling it now could drop or requeue that worker's copy.
        oldest = time.monotonic() - self.lease_seconds
        try:
            while kept:
                kept_at, tags, attempt = kept[0]
                if kept_at < oldest:
                    stale += 1
                else:
                    try:
                        attempt()
                    except OperationalError as exc:
                        if isinstance(exc.__cause__, CONNECTION_ERRORS):
                            raise exc.__cause__ from None
                        logger.error("Could not settle %s once Redis was back: %s", tags, exc)
                    sent += 1
                kept.popleft()
        finally:
            if kept:  # Redis away again (or an unexpected error): keep the rest
                self._keep_again(kept, dropped)
        logger.info("Sent %d settlement(s) kept while Redis was away", sent)
        if stale:
            logger.warning(
                "%d settlement(s) were kept longer than the visibility timeout (%.0f s) and are"
                " not sent: their messages may have been restored; they run again",
                stale, self.lease_seconds,
            )  # fmt: skip
        if dropped:
            logger.warning(
                "%d settlement(s) beyond %d were dropped while Redis was away; their messages"
                " run again after the visibility timeout", dropped, MAX_KEPT,
            )  # fmt: skip

    def _keep_again(self, unsent: collections.deque[Any], dropped: int) -> None:
        """Put back what ``_send_kept`` could not send, before what was kept meanwhile."""
        with self._kept_lock:
            unsent.extend(self._kept)
            while len(unsent) > MAX_KEPT:
                unsent.popleft()
                dropped += 1
            self._kept, self._kept_dropped = unsent, self._kept_dropped + dropped

    def _forget_transient(self) -> None:
        """Auto-delete queues go with their consumer: their bindings and lists."""
        if not self._transient:
            return
        pipe = self.client.pipeline(transaction=False)
        for bound in self._transient:
            for command in self._bound(bound):
                pipe.srem(command[1], command[2])
            for key in self._lists(bound.queue):  # one by one: a cluster pipeline wants that
                pipe.delete(key)
        self._transient.clear()
        with contextlib.suppress(redis.RedisError):  # Redis away: the leftovers stay
            pipe.execute()

    def close(self) -> None:
        for relay in self._relays.values():
            relay.stop()
        self._relays.clear()
        self._forget_transient()
        if self._kept:
            try:
                self._send_kept()
            except CONNECTION_ERRORS:
                logger.warning(
                    "Redis is away: %d kept settlement(s) are lost with this worker; their"
                    " messages run again after the visibility timeout", len(self._kept),
                )  # fmt: skip
        if self._calls:
            with contextlib.suppress(redis.RedisError):  # else it expires with the lease
                self.client.delete(self._receipt)
        self._lane.close()
        self._publisher.close()
        self.client.close()


def _routed_exchanges(batch: Sequence[Outgoing]) -> list[str]:
    """The direct and topic exchanges of a batch, whose binding tables route it."""
    return list(
        dict.fromkeys(i.exchange for i in batch if i.exchange and i.exchange_type != "fanout")
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _task_id(raw: bytes) -> str | None:
    """The task id in a queued envelope's headers; None for anything else on the list."""
    try:
        headers = json.loads(raw).get("headers")
    except (ValueError, AttributeError):
        return None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None


def _dead_key(row: bytes) -> str:
    """A dead letter's name: its entry's digest (entries carry their time, so they differ)."""
    return hashlib.sha1(row, usedforsecurity=False).hexdigest()


def _dead_letter(row: bytes) -> DeadLetter:
    record = serialization.json_loads(row)
    envelope = record.get("envelope")
    try:
        message = message_from_envelope(envelope)
    except (KeyError, TypeError, AttributeError, ValueError, binascii.Error):
        text = envelope if isinstance(envelope, str) else json.dumps(envelope)
        message = Message({}, {}, text.encode(), "", "utf-8")  # the raw entry
    return DeadLetter(
        message, record["queue"], record["reason"], record["failed_at"], _dead_key(row)
    )


def message_from_envelope(envelope: Mapping[str, Any]) -> Message:
    """A ``Message`` from kombu's envelope (base64 body, or plain text without encoding)."""
    properties = envelope["properties"]
    body = envelope["body"]
    if properties.get("body_encoding") == "base64":
        payload = base64.b64decode(body)
    elif isinstance(body, str):
        payload = body.encode("utf-8")
    else:  # a JSON value inlined by a hand-written producer
        payload = json.dumps(body).encode("utf-8")
    return Message(
        dict(envelope.get("headers") or {}),
        dict(properties),
        payload,
        envelope.get("content-type") or "application/json",
        envelope.get("content-encoding") or "utf-8",
    )


def _not_an_envelope(queue: str, exc: Exception) -> str:
    """Why an entry of a queue's list cannot be a task: it is not what kombu pushes."""
    return (
        f"not a Celery message: the Redis list of queue {queue!r} held an entry that is not "
        f"kombu's JSON envelope ({exc}); something other than a Celery or caraway client "
        "pushed it there (a script's LPUSH, or another program using the same Redis "
        "database and key prefix)"
    )
