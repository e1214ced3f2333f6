"""Redis URLs and connections, shared by the Redis broker and the Redis result backend.

URL forms (Celery's and kombu's):

* ``redis://[[user]:password@]host[:port][/db][?option=value]``
* ``rediss://...?ssl_cert_reqs=required`` (TLS; ``CERT_NONE``/``none``, ``CERT_OPTIONAL``/
  ``optional``, ``CERT_REQUIRED``/``required``)
* ``unix:///path/to/redis.sock?virtual_host=0`` (also ``redis+socket://``, ``socket://``)
* ``sentinel://[:password@]h1:26379[/db];sentinel://h2:26379`` with ``master_name`` (and
  optionally ``sentinel_kwargs``) in the transport options

Errors from redis-py are translated into ``OperationalError`` here, with the password masked.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.retry import Retry

from caraway.exceptions import ImproperlyConfigured, OperationalError, Unreachable
from caraway.utils.pid import after_fork_in_child, current_pid
from caraway.utils.text import mask_url

logger = logging.getLogger("caraway.redis")

DEFAULT_PORT = 6379
#: One retry on a connection error, after 40 ms (redis-py's exponential backoff, base 20 ms).
RETRIES, RETRY_BASE, RETRY_CAP = 1, 0.02, 0.2
#: Replies a thread may owe for pipelined sends before it stops to read them.
MAX_UNREAD = 256
DEFAULT_SENTINEL_PORT = 26379
UNIX_SCHEMES = frozenset({"unix", "redis+socket", "socket"})
TCP_SCHEMES = frozenset({"redis", "rediss"})
CERT_REQS = {
    "cert_none": "none",
    "none": "none",
    "cert_optional": "optional",
    "optional": "optional",
    "cert_required": "required",
    "required": "required",
}
#: Query options passed on to redis-py, with the type they are read as.
_QUERY_OPTIONS: dict[str, type] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "health_check_interval": int,
    "max_connections": int,
    "client_name": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
}
#: Transport options (``broker_transport_options`` / ``result_backend_transport_options``)
#: that configure the connection itself.
_TRANSPORT_CONNECTION_OPTIONS = (
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "retry_on_timeout",
    "max_connections",
    "health_check_interval",
    "client_name",
    "username",
    "password",
)

#: redis-py's data errors that mean "the server cannot be reached right now"; on a
#: cluster, also a slot without a master (a failover under way) and no node answering.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    # Since redis-py 6; older ones raise ConnectionError there.
    getattr(redis.exceptions, "RedisClusterUnreachableError", redis.ConnectionError),
)


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect, read from a URL."""

    url: str = field(repr=False)
    host: str = "localhost"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    unix_path: str | None = None
    ssl: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def masked(self) -> str:
        return mask_url(self.url)


def parse_url(url: str) -> RedisTarget:
    """Read any of the URL forms above; options in the query come back in ``options``."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sentinel":
        return _parse_sentinel(url)
    if scheme not in TCP_SCHEMES | UNIX_SCHEMES:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r} is not a Redis URL: expected redis://, rediss://, unix:// "
            "or sentinel://"
        )
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    options = _query_options(url, query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if scheme in UNIX_SCHEMES:
        path = unquote(parts.path) if not parts.netloc or "@" in parts.netloc else None
        if path is None:  # unix://relative/path: netloc is the first path segment
            path = unquote(parts.netloc + parts.path)
        if not path:
            raise ImproperlyConfigured(
                f"{mask_url(url)!r} names no socket: expected unix:///path/to/redis.sock"
            )
        db = _int(url, "virtual_host", query.get("virtual_host", query.get("db", "0")))
        return RedisTarget(url, username=username, password=password, unix_path=path, db=db,
                           options=options)  # fmt: skip
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad port in {mask_url(url)!r}: {exc}") from None
    db_text = parts.path.strip("/") or query.get("virtual_host") or query.get("db") or "0"
    return RedisTarget(
        url,
        host=parts.hostname or "localhost",
        port=port,
        db=_int(url, "database number", db_text),
        username=username or None,
        password=password or None,
        ssl=scheme == "rediss",
        options=options,
    )


def _parse_sentinel(url: str) -> RedisTarget:
    sentinels: list[tuple[str, int]] = []
    first: Any = None
    for part in filter(None, (p.strip() for p in url.split(";"))):
        if not part.lower().startswith("sentinel://"):
            raise ImproperlyConfigured(
                f"{mask_url(url)!r}: every part must read sentinel://host:port, separated by ';'"
            )
        parts = urlsplit(part)
        try:
            port = parts.port or DEFAULT_SENTINEL_PORT
        except ValueError as exc:
            raise ImproperlyConfigured(f"bad port in {mask_url(url)!r}: {exc}") from None
        sentinels.append((parts.hostname or "localhost", port))
        first = first or parts
    assert first is not None
    query = dict(parse_qsl(first.query))
    return RedisTarget(
        url,
        db=_int(url, "database number", first.path.strip("/") or query.get("db") or "0"),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        sentinels=tuple(sentinels),
        options=_query_options(url, query),
    )


def _query_options(url: str, query: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, kind in _QUERY_OPTIONS.items():
        if name in query:
            try:
                options[name] = kind(query[name])
            except ValueError:
                raise ImproperlyConfigured(
                    f"{name}={query[name]!r} in {mask_url(url)!r} is not a {kind.__name__}"
                ) from None
    if "ssl_cert_reqs" in query:
        options["ssl_cert_reqs"] = cert_reqs(query["ssl_cert_reqs"], url)
    return options


def cert_reqs(value: Any, url: str = "") -> str:
    """Celery's ``CERT_*`` names, ``ssl.VerifyMode`` or none/optional/required -> redis-py's."""
    if isinstance(value, ssl.VerifyMode):
        value = value.name
    text = str(value).strip().lower()
    if text not in CERT_REQS:
        where = f" in {mask_url(url)!r}" if url else ""
        raise ImproperlyConfigured(
            f"ssl_cert_reqs={value!r}{where} is not one of CERT_NONE, CERT_OPTIONAL, "
            "CERT_REQUIRED (or none, optional, required)"
        )
    return CERT_REQS[text]


def _int(url: str, what: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ImproperlyConfigured(
            f"{what} {text!r} in {mask_url(url)!r} is not a number"
        ) from None


def ssl_options(use_ssl: Any) -> Mapping[str, Any] | None:
    """``broker_use_ssl``/``redis_backend_use_ssl`` (True, or a dict of ``ssl_*`` options)
    as ``connect`` takes them: None when TLS is not asked for."""
    if isinstance(use_ssl, Mapping):
        return use_ssl
    return {} if use_ssl else None


def connect(
    target: RedisTarget,
    transport_options: Mapping[str, Any] | None = None,
    ssl_options: Mapping[str, Any] | None = None,
    **defaults: Any,
) -> redis.Redis:
    """A client with its own connection pool; nothing connects until the first command.

    Precedence: ``defaults`` < transport options < options in the URL's query.
    One retry on a connection error: it replaces a pooled connection that died while idle
    (a Redis restart) without hiding an outage for long.
    """
    transport_options = transport_options or {}
    kwargs = _client_kwargs(target, transport_options, ssl_options, defaults)
    kwargs["retry"] = Retry(ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE), RETRIES)
    if target.sentinels:
        return _sentinel_master(target, transport_options, kwargs)
    if target.unix_path is not None:
        return redis.Redis(unix_socket_path=target.unix_path, **kwargs)
    return redis.Redis(host=target.host, port=target.port, **kwargs)


def connect_async(
    target: RedisTarget,
    transport_options: Mapping[str, Any] | None = None,
    ssl_options: Mapping[str, Any] | None = None,
    **defaults: Any,
) -> redis.asyncio.Redis:
    """``connect`` for asyncio: the same server, options and retry, on redis-py's asyncio
    client (for the awaitable client API; bound to the loop that first uses it)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    transport_options = transport_options or {}
    kwargs = _client_kwargs(target, transport_options, ssl_options, defaults)
    kwargs["retry"] = AsyncRetry(ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE), RETRIES)
    if target.sentinels:
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(
            list(target.sentinels),
            sentinel_kwargs=dict(transport_options.get("sentinel_kwargs") or {}),
            **kwargs,
        )
        master: redis.asyncio.Redis = sentinel.master_for(
            _master_name(target, transport_options), redis_class=redis.asyncio.Redis
        )
        return master
    if target.unix_path is not None:
        return redis.asyncio.Redis(unix_socket_path=target.unix_path, **kwargs)
    return redis.asyncio.Redis(host=target.host, port=target.port, **kwargs)


class LoopClients:
    """One asyncio client per event loop, kept for the loop's life.

    A client is bound to the loop that first uses it, and opening one per call costs a
    connection (TCP, TLS, AUTH) per ``await``. Each loop gets its own on first use; it is
    closed when the loop shuts down its async generators (``asyncio.run`` does, as do the
    worker's loops and servers built on ``asyncio.run``).
    """

    def __init__(self, make: Callable[[], redis.asyncio.Redis]) -> None:
        self._make = make
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        after_fork_in_child(self._forget_parent)

    def _forget_parent(self) -> None:
        """In a forked child: the parent's loops and their clients are not ours to use."""
        self._clients = weakref.WeakKeyDictionary()

    async def get(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)
        if held is None:
            client = self._make()
            closer = _closed_at_shutdown(client)
            held = self._clients[loop] = (client, closer)
            # Runs to its ``yield`` at once; the loop now holds it among its async
            # generators, and its shutdown_asyncgens() resumes it into the ``finally``.
            await closer.__anext__()
        return held[0]


async def _closed_at_shutdown(client: redis.asyncio.Redis) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


def _client_kwargs(
    target: RedisTarget,
    transport_options: Mapping[str, Any],
    ssl_options: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_keepalive": True, **defaults}
    kwargs.update({k: transport_options[k] for k in _TRANSPORT_CONNECTION_OPTIONS
                   if k in transport_options})  # fmt: skip
    kwargs.update(target.options)
    kwargs.setdefault("username", target.username)
    kwargs.setdefault("password", target.password)
    # redis-py retries timeouts by itself and deprecates the flag; accepted for Celery's sake.
    kwargs.pop("retry_on_timeout", None)
    kwargs["db"] = target.db
    if (target.ssl or ssl_options) and target.unix_path is None:
        kwargs["ssl"] = True
        for key, value in (ssl_options or {}).items():
            kwargs.setdefault(key, cert_reqs(value) if key == "ssl_cert_reqs" else value)
    return kwargs


def _master_name(target: RedisTarget, transport_options: Mapping[str, Any]) -> str:
    master_name = transport_options.get("master_name")
    if not master_name:
        raise ImproperlyConfigured(
            f"{target.masked!r} needs the name of the master: set 'master_name' in "
            "broker_transport_options (or result_backend_transport_options)"
        )
    return str(master_name)


def _sentinel_master(
    target: RedisTarget, transport_options: Mapping[str, Any], kwargs: dict[str, Any]
) -> redis.Redis:
    from redis.sentinel import Sentinel

    master_name = _master_name(target, transport_options)
    sentinel_kwargs = dict(transport_options.get("sentinel_kwargs") or {})
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)
    master: redis.Redis = sentinel.master_for(master_name, redis_class=redis.Redis)
    return master


@contextmanager
def translated(target: RedisTarget, doing: str) -> Iterator[None]:
    """Turn redis-py errors into ``OperationalError`` naming the (masked) URL;
    ``Unreachable`` when the server could not be reached."""
    try:
        yield
    except redis.RedisError as exc:
        raise translation(target, doing, exc) from exc


def translation(target: RedisTarget, doing: str, exc: redis.RedisError) -> OperationalError:
    """``translated``'s error for ``exc``, for a hot path that cannot afford a context
    manager (raise it ``from exc``)."""
    kind = Unreachable if isinstance(exc, CONNECTION_ERRORS) else OperationalError
    return kind(f"Redis at {target.masked} failed {doing}: {exc}")


class Lane:
    """Commands on a connection a thread keeps: the hot path's publish, fetch, ack, store.

    redis-py's ``execute_command`` and pipelines cost 50-150 µs of CPU per call (pool
    checkout with a readiness poll, retry closures, instrumentation); sending the packed
    commands on a kept connection and reading the replies costs about 15 µs. Failures
    behave as the client's (``connect``): a connection error disconnects and retries once
    after the same backoff; an error reply raises after every reply has been read.
    ``on_lost`` receives the commands ``send`` wrote whose replies never came (the
    connection dropped): they may or may not have run, so only idempotent ones are sent.
    ``drops`` counts the dropped connections found so far; ``owed`` lists what every
    thread sent and has not seen answered (an idle thread finds its own losses late).
    """

    def __init__(
        self, client: redis.Redis, on_lost: Callable[[list[Sequence[Any]]], None] | None = None
    ) -> None:
        self._pool = client.connection_pool
        self._on_lost = on_lost
        self._local = threading.local()
        self._lock = threading.Lock()
        self._held: list[AbstractConnection] = []
        self._owed: list[collections.deque[Sequence[Any]]] = []
        self.drops = 0
        # Kept connections count against max_connections for good: a quarter of it at most
        # (16), so a large thread pool still checks the rest out per call.
        limit = getattr(self._pool, "max_connections", None)
        self._keep = min(16, limit // 4) if isinstance(limit, int) else 0

    def _kept(self) -> AbstractConnection | None:
        local = self._local
        conn: AbstractConnection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == current_pid():
            return conn
        with self._lock:
            if len(self._held) >= self._keep:
                return None
            # Taken from the pool and never given back: the pool's disconnect() (on
            # close) still reaches it.
            conn = self._pool.get_connection()
            self._held.append(conn)
            sent: collections.deque[Sequence[Any]] = collections.deque()
            self._owed.append(sent)
        local.conn, local.pid, local.sent = conn, current_pid(), sent
        return conn

    def owed(self) -> list[Sequence[Any]]:
        """A snapshot of the commands every thread sent whose replies it has not read."""
        with self._lock:
            return [command for sent in self._owed for command in sent.copy()]

    def _dropped(self) -> None:
        with self._lock:
            self.drops += 1

    def call(self, *commands: Sequence[Any]) -> list[Any]:
        """Send ``commands`` in one write, return their replies (one round trip)."""
        conn = self._kept()
        if conn is not None:
            if self._local.sent:
                self._settle(conn)
            return _call(conn, commands, self._dropped)
        conn = self._pool.get_connection()
        try:
            return _call(conn, commands, self._dropped)
        finally:
            self._pool.release(conn)

    def send(self, *commands: Sequence[Any]) -> None:
        """Write ``commands`` and go on; their replies are read before this thread's next
        call (or once ``MAX_UNREAD`` pile up).

        For idempotent writes whose failure can only make work run again, never vanish --
        acks. The replies are still read, so an error is logged, the connection stays in
        step, and commands whose replies were lost go to ``on_lost``.
        """
        conn = self._kept()
        if conn is None:
            self.call(*commands)
            return
        local = self._local
        if len(local.sent) >= MAX_UNREAD:
            self._settle(conn)
        try:
            conn.send_packed_command([pack(commands)])  # type: ignore[no-untyped-call]
        except CONNECTION_ERRORS:
            self._forget_unread(conn)
            _call(conn, commands, self._dropped)  # reconnects, retries once, or raises
            return
        local.sent.extend(commands)

    def _settle(self, conn: AbstractConnection) -> None:
        """Read the replies owed for earlier ``send``s."""
        sent = self._local.sent
        try:
            while sent:
                try:
                    conn.read_response()
                except redis.ResponseError as exc:
                    logger.error("Redis refused a pipelined command: %s", exc)
                sent.popleft()
        except CONNECTION_ERRORS:
            self._forget_unread(conn)

    def _forget_unread(self, conn: AbstractConnection) -> None:
        """The connection dropped: hand over the commands still owed a reply."""
        sent = self._local.sent
        lost = list(sent)
        sent.clear()
        conn.disconnect()  # type: ignore[no-untyped-call]
        self._dropped()
        if not lost:
            return
        if self._on_lost is not None:
            self._on_lost(lost)
        else:
            logger.warning(
                "The connection to Redis dropped before %d pipelined commands were confirmed",
                len(lost),
            )

    def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA ``script``; loaded through the client the first time Redis lacks it."""
        try:
            return self.call(("EVALSHA", script.sha, len(keys), *keys, *args))[0]
        except redis.exceptions.NoScriptError:
            return script(keys=list(keys), args=list(args))

    def close(self) -> None:
        with self._lock:
            held, self._held, self._owed = self._held, [], []
        for conn in held:
            conn.disconnect()  # type: ignore[no-untyped-call]
        self._local = threading.local()


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """RESP for ``commands``, encoded as redis-py encodes (str as UTF-8, int, float by
    ``repr``), in a fraction of its time: no per-argument dispatch or chunking."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, bytes | bytearray | memoryview):
                data = bytes(arg)
            elif isinstance(arg, int):
                data = b"%d" % arg
            elif isinstance(arg, float):
                data = repr(arg).encode()
            else:
                raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")
            out += (b"$%d\r\n" % len(data), data, b"\r\n")  # no copy of the value until join
    return b"".join(out)


def _call(
    conn: AbstractConnection, commands: Sequence[Sequence[Any]], dropped: Callable[[], None]
) -> list[Any]:
    packed = [pack(commands)]
    failures = 0
    while True:
        try:
            conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
            return read_replies(conn, len(commands))
        except CONNECTION_ERRORS:
            conn.disconnect()  # type: ignore[no-untyped-call]
            dropped()
            failures += 1
            if failures > RETRIES:
                raise
            time.sleep(min(RETRY_CAP, RETRY_BASE * 2**failures))


def read_replies(conn: AbstractConnection, count: int) -> list[Any]:
    """The next ``count`` replies; the first error reply raised once all are read."""
    replies: list[Any] = []
    error: redis.ResponseError | None = None
    for _ in range(count):
        try:
            reply = conn.read_response()
        except redis.ResponseError as exc:  # read the rest, so the connection stays in step
            error = error or exc
            replies.append(exc)
            continue
        if isinstance(reply, list) and error is None:  # EXEC: errors come inside its reply
            error = next((item for item in reply if isinstance(item, redis.ResponseError)), None)
        replies.append(reply)
    if error is not None:
        raise error
    return replies
