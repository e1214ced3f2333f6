"""``redis://``: results where Celery keeps them, so Celery clients read caraway's and back.

Every write is one server-side step (docs/celery-wire.md §5.2): refuse to replace a stored SUCCESS,
then SETEX (SET without expiry) and PUBLISH the payload on the channel named like the key.
Waiting subscribes to that channel first and reads the key second, so a result written in
between is never missed, and then sleeps on the socket until the PUBLISH: no polling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.client import PubSub

from caraway import serialization, states
from caraway.engines.base.backend import (
    GROUP_KEY_PREFIX,
    TASK_KEY_PREFIX,
    Backend,
    BackendCapabilities,
    Stored,
)
from caraway.engines.base.beat_store import BeatStore
from caraway.engines.base.chord_join import Joiner
from caraway.engines.redis.beat_store import RedisStore
from caraway.engines.redis.chord_join import RedisJoiner
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
)
from caraway.exceptions import OperationalError, TimeoutError
from caraway.utils.pid import current_pid

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp

# Writes a result and announces it, unless the key already holds a SUCCESS (a late STARTED
# or a duplicate run must not hide it). The stored status is read with cjson, so this
# script serves JSON results; other serializers take the WATCH path in Python, and so does
# a write over a compressed payload (result_compression: it starts with a NUL byte), which
# the script answers with -1 instead of writing.
# KEYS: key; ARGV: payload, ttl in ms (0: none), "1" to guard against replacing SUCCESS.
SET_RESULT = """
if ARGV[3] == '1' then
  local current = redis.call('GET', KEYS[1])
  if current then
    if string.byte(current, 1) == 0 then
      return -1
    end
    local ok, doc = pcall(cjson.decode, current)
    if ok and type(doc) == 'table' and doc.status == 'SUCCESS' then
      return 0
    end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""
#: Pre-subscriptions (``on_task_call``) left without a wait, before one UNSUBSCRIBE drops them.
STALE_PRESUBSCRIPTIONS = 32


#: Results read per MGET (a group's members, for its state or its join).
MGET_CHUNK = 1000


class RedisBackend(Backend):
    # Celery's own chord keys (caraway/engines/redis/chord_join.py), and beat beside them.
    capabilities = BackendCapabilities(
        chord_join="native", beat_schedules=True, compressed_results=True
    )

    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)
        conf = app.conf
        self.target = self.parse_target(url)
        self.prefix = str(self.options.get("global_keyprefix") or "")
        defaults: dict[str, Any] = {
            "socket_timeout": conf.redis_socket_timeout,
            "socket_connect_timeout": conf.redis_socket_connect_timeout,
            "retry_on_timeout": conf.redis_retry_on_timeout,
            "socket_keepalive": conf.redis_socket_keepalive,
            "max_connections": conf.redis_max_connections,
            "health_check_interval": conf.redis_backend_health_check_interval or 0,
        }
        self._connection = (
            ssl_options(conf.redis_backend_use_ssl),
            {k: v for k, v in defaults.items() if v is not None},
        )
        self.client = self.new_client()
        self._set_result = self.client.register_script(SET_RESULT)
        self._lane = self.new_lane()
        ssl, defaults = self._connection
        self._async_clients = LoopClients(
            lambda: connect_async(self.target, self.options, ssl, **defaults)
        )
        self.content_type, self.content_encoding, _ = serialization.dumps(None, self.serializer)
        self._json = self.content_type == "application/json"
        self._local = threading.local()
        self._pubsubs: list[PubSub] = []
        self._pubsubs_lock = threading.Lock()

    # --- connections and key names (a cluster engine overrides these) -------------------

    def parse_target(self, url: str) -> RedisTarget:
        return parse_url(url)

    def new_client(self) -> redis.Redis:
        ssl, defaults = self._connection
        return connect(self.target, self.options, ssl_options=ssl, **defaults)

    def new_lane(self) -> Lane:
        return Lane(self.client)

    def chord_key(self, group_id: str, suffix: str = "") -> str:
        """A key of the chord join of ``group_id`` (Celery's names)."""
        return self.key(f"{GROUP_KEY_PREFIX}{group_id}{suffix}")

    get_key_for_group = chord_key  # Celery's name, used to read a join's keys

    def beat_store(self) -> BeatStore:
        return RedisStore(self.client, self.target, self.prefix)

    def chord_joiner(self, size: int | None = None) -> Joiner:
        return RedisJoiner(self)

    def describe(self) -> str:
        return self.target.masked

    def key(self, key: str) -> str:
        return self.prefix + key

    # --- engine primitives ---------------------------------------------------------------

    def get_raw(self, key: str) -> Stored | None:
        with translated(self.target, "to read a result"):
            (payload,) = self._lane.call(("GET", self.key(key)))
        return None if payload is None else self._stored(_bytes(payload))

    def get_many_task_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """One MGET per ``MGET_CHUNK`` tasks."""
        metas: list[dict[str, Any]] = []
        for start in range(0, len(task_ids), MGET_CHUNK):
            chunk = task_ids[start : start + MGET_CHUNK]
            keys = [self.key(TASK_KEY_PREFIX + task_id) for task_id in chunk]
            with translated(self.target, "to read results"):
                payloads = self.mget(keys)
            metas.extend(
                self.meta_of(task_id, None if raw is None else self._stored(_bytes(raw)))
                for task_id, raw in zip(chunk, payloads, strict=True)
            )
        return metas

    def mget(self, keys: Sequence[str]) -> list[Any]:
        (payloads,) = self._lane.call(("MGET", *keys))
        return list(payloads)

    def _stored(self, payload: bytes) -> Stored:
        return Stored(payload, self.content_type, self.content_encoding)

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        ttl_ms = 0 if not ttl else max(1, round(ttl * 1000))
        guard = state is not None
        with translated(self.target, "to store a result"):
            # Lua reads JSON only: a compressed payload takes the watched path too.
            if not guard or (value.content_type == "application/json" and not self.compression):
                written = self._lane.script(
                    self._set_result,
                    [self.key(key)],
                    [value.payload, ttl_ms, "1" if guard else "0"],
                )
                if written == -1:  # a compressed result is stored: Python reads it
                    self._set_watched(self.key(key), value, ttl_ms)
            else:
                self._set_watched(self.key(key), value, ttl_ms)

    def _set_watched(self, key: str, value: Stored, ttl_ms: int) -> None:
        """The same write for serializers Lua cannot read: WATCH, check, MULTI."""
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    current = pipe.get(key)
                    if current is not None and self._is_success(_bytes(current)):
                        return
                    pipe.multi()
                    if ttl_ms:
                        pipe.set(key, value.payload, px=ttl_ms)
                    else:
                        pipe.set(key, value.payload)
                    pipe.publish(key, value.payload)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def _is_success(self, payload: bytes) -> bool:
        try:
            meta = self.decode(self._stored(payload))
        except Exception:  # someone else's payload: replaceable
            return False
        return isinstance(meta, dict) and meta.get("status") == states.SUCCESS

    def delete_raw(self, key: str) -> None:
        with translated(self.target, "to delete a result"):
            self.client.delete(self.key(key))

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.incrby(self.key(key), amount)
        if ttl:
            pipe.pexpire(self.key(key), max(1, round(ttl * 1000)))
        with translated(self.target, "to count"):
            return int(pipe.execute()[0])

    def read_counter(self, key: str) -> int | None:
        with translated(self.target, "to read a counter"):
            (value,) = self._lane.call(("GET", self.key(key)))
        return None if value is None else int(value)

    def close(self) -> None:
        with self._pubsubs_lock:
            pubsubs, self._pubsubs = self._pubsubs, []
        for pubsub in pubsubs:
            pubsub.close()
        self._local = threading.local()
        self._lane.close()
        self.client.close()

    # --- waiting -------------------------------------------------------------------------

    def _pubsub(self) -> PubSub:
        """This thread's subscriber connection, kept between waits (one round trip saved)."""
        pubsub: PubSub | None = getattr(self._local, "pubsub", None)
        if pubsub is None or self._local.pid != current_pid():
            pubsub = self.client.pubsub()
            self._local.pubsub, self._local.pid = pubsub, current_pid()
            self._forget_subscriptions()
            with self._pubsubs_lock:
                self._pubsubs.append(pubsub)
        return pubsub

    def _forget_subscriptions(self) -> None:
        local = self._local
        # SUBSCRIBE confirmations not read yet, by channel: replies come in order, so a
        # channel is known subscribed once its count is back to 0.
        local.unconfirmed = {}
        local.presubscribed = None
        local.stale = []

    def _drop_pubsub(self) -> None:
        pubsub = getattr(self._local, "pubsub", None)
        self._local.pubsub = None
        self._forget_subscriptions()
        if pubsub is not None:
            with self._pubsubs_lock:
                if pubsub in self._pubsubs:
                    self._pubsubs.remove(pubsub)
            pubsub.reset()

    def _subscribe(self, pubsub: PubSub, channel: str) -> None:
        unconfirmed: dict[bytes, int] = self._local.unconfirmed
        key = channel.encode()
        unconfirmed[key] = unconfirmed.get(key, 0) + 1
        pubsub.subscribe(channel)

    def _read(self, pubsub: PubSub, timeout: float) -> dict[str, Any] | None:
        """The next message, noting SUBSCRIBE confirmations (every read goes through here)."""
        message: dict[str, Any] | None = pubsub.get_message(timeout=timeout)
        if message is not None and message["type"] == "subscribe":
            unconfirmed: dict[bytes, int] = self._local.unconfirmed
            left = unconfirmed.pop(message["channel"], 0) - 1
            if left > 0:
                unconfirmed[message["channel"]] = left
        return message

    def on_task_call(self, task_id: str) -> None:
        """SUBSCRIBE now, without waiting: a ``get()`` in this thread then only reads the
        confirmation (here by then) and GETs, instead of paying a round trip for it.

        Pre-subscriptions never waited for are dropped in bulk, with what they received.
        """
        channel = self.key(TASK_KEY_PREFIX + task_id)
        try:
            pubsub = self._pubsub()
            local = self._local
            if local.presubscribed is not None:
                local.stale.append(local.presubscribed)
            if len(local.stale) >= STALE_PRESUBSCRIPTIONS:
                stale, local.stale = local.stale, []
                pubsub.unsubscribe(*stale)  # type: ignore[no-untyped-call]
                while self._read(pubsub, 0.0) is not None:
                    pass
            self._subscribe(pubsub, channel)
            local.presubscribed = channel
        except CONNECTION_ERRORS:  # the wait will subscribe (and report) by itself
            self._drop_pubsub()

    def _subscribe_and_get(self, channel: str) -> bytes | None:
        """SUBSCRIBE, wait for Redis to confirm, then GET: whatever comes later is published.

        After ``on_task_call`` the SUBSCRIBE is sent already, and usually confirmed.
        """
        pubsub = self._pubsub()
        local = self._local
        if local.presubscribed == channel:
            local.presubscribed = None
        else:
            if channel in local.stale:
                local.stale.remove(channel)
            self._subscribe(pubsub, channel)
        key = channel.encode()
        deadline = time.monotonic() + 10.0
        while key in local.unconfirmed:
            message = self._read(pubsub, max(0.0, deadline - time.monotonic()))
            if message is None and time.monotonic() >= deadline:
                raise OperationalError(f"Redis at {self.target.masked} did not confirm SUBSCRIBE")
        (payload,) = self._lane.call(("GET", channel))
        return None if payload is None else _bytes(payload)

    async def wait_for_async(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """SUBSCRIBE to the result's channel on redis-py's asyncio client, then GET: a result
        stored since is read, a later one arrives as its PUBLISH. The loop never blocks."""
        key = self.key(TASK_KEY_PREFIX + task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with translated(self.target, "to wait for a result"):
            client = await self._async_clients.get()
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(key)
                payload = await client.get(key)
                while not self._ready(payload):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"the operation timed out waiting for task {task_id}")
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=min(remaining or 1.0, 1.0)
                    )
                    if message is not None and message["type"] == "message":
                        payload = message["data"]
                    elif message is None:  # re-read now and then: a missed PUBLISH
                        payload = await client.get(key)
        assert payload is not None
        meta: dict[str, Any] = self.decode(self._stored(_bytes(payload)))
        return meta

    def _ready(self, payload: Any) -> bool:
        if payload is None:
            return False
        meta = self.decode(self._stored(_bytes(payload)))
        return meta.get("status") in states.READY_STATES

    def wait_changed(self, key: str, timeout: float) -> None:
        """Wake on the next write to ``key`` (its PUBLISH) or after ``timeout``."""
        channel = self.key(key)
        try:
            self._subscribe_and_get(channel)
            self._next_payload(channel, time.monotonic() + timeout)
        except CONNECTION_ERRORS:
            self._drop_pubsub()
            time.sleep(timeout)
        finally:
            self._unsubscribe(channel)

    def _next_payload(self, channel: str, deadline: float) -> bytes | None:
        pubsub = self._pubsub()
        wanted = channel.encode()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            message = self._read(pubsub, remaining)
            if message and message["type"] == "message" and message["channel"] == wanted:
                payload: bytes = message["data"]
                return payload

    def _unsubscribe(self, channel: str) -> None:
        """Unsubscribe without waiting: a late message on it is skipped by the next wait."""
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is not None:
            try:
                pubsub.unsubscribe(channel)
            except CONNECTION_ERRORS:
                self._drop_pubsub()

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_interval: Callable[[], Any] | None = None,
    ) -> dict[str, Any]:
        """Block until the task is ready: subscribe, read, then sleep until the PUBLISH."""
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self.key(TASK_KEY_PREFIX + task_id)
        with translated(self.target, "to wait for a result"):
            return self._wait(task_id, channel, deadline, interval, on_interval)

    def _wait(
        self,
        task_id: str,
        channel: str,
        deadline: float | None,
        interval: float,
        on_interval: Callable[[], Any] | None,
    ) -> dict[str, Any]:
        try:
            payload = self._subscribe_retrying(channel)
            while True:
                if payload is not None:
                    meta: dict[str, Any] = self.decode(self._stored(payload))
                    if meta.get("status") in states.READY_STATES:
                        return meta
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"the operation timed out waiting for task {task_id}")
                wake = time.monotonic() + (interval if on_interval is not None else 1.0)
                until = wake if deadline is None else min(wake, deadline)
                try:
                    payload = self._next_payload(channel, until)
                except CONNECTION_ERRORS:
                    self._drop_pubsub()
                    payload = self._subscribe_retrying(channel)
                    continue
                if payload is None and on_interval is not None:
                    on_interval()
        finally:
            self._unsubscribe(channel)

    def _subscribe_retrying(self, channel: str) -> bytes | None:
        """Subscribe and read, with one fresh connection if the kept one died (a restart)."""
        try:
            return self._subscribe_and_get(channel)
        except CONNECTION_ERRORS:
            self._drop_pubsub()
        return self._subscribe_and_get(channel)


def _bytes(value: Any) -> bytes:
    """redis-py types replies as bytes or str; this client never decodes them."""
    return value.encode() if isinstance(value, str) else bytes(value)
