"""AMQP URLs and connections (py-amqp): shared by the ``amqp://`` broker and ``rpc://`` results.

``amqp://user:password@host:port/vhost`` as kombu reads it: the vhost is the URL-decoded
path without its leading slash, ``/`` when empty (``amqp://host//`` also means ``/``).
``amqps://`` turns TLS on (options from ``broker_use_ssl``) and defaults to port 5671.
Several URLs joined by ``;`` (or ``broker_url`` given as a list) are failover alternates, tried
in the order ``broker_failover_strategy`` gives: ``round-robin`` (the default: the last one that
answered first, then the next ones), ``shuffle``, or a callable that takes the list and returns
an iterator over it, as in Celery.
Errors of the client library are translated here into ``OperationalError``, password masked.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import amqp

from caraway.exceptions import ImproperlyConfigured, OperationalError, Unreachable
from caraway.utils.pid import after_fork_in_child
from caraway.utils.text import mask_url

logger = logging.getLogger("caraway.amqp")

SCHEMES = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671, "pyamqps": 5671}
T = TypeVar("T")
#: What a lost or refused connection raises in py-amqp (and below it, in the socket layer).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp.exceptions.AMQPError,
    amqp.exceptions.MessageNacked,
    OSError,  # socket errors, timeouts, SSL errors, ConnectionResetError
    EOFError,
    AttributeError,  # py-amqp touches a dropped transport as None
    AssertionError,  # py-amqp asserts on a closed channel in a few places
)


@dataclass(slots=True)
class AMQPParams:
    """Everything needed to open a connection, read from a URL and the app's settings."""

    url: str
    host: str = "localhost"
    port: int = 5672
    userid: str = "guest"
    password: str = "guest"
    virtual_host: str = "/"
    ssl: bool | dict[str, Any] = False
    heartbeat: float = 0.0
    connect_timeout: float | None = 4.0
    login_method: str | None = None
    client_properties: dict[str, Any] = field(default_factory=dict)
    #: Failover: the other URLs' parameters, and how to order the attempts.
    alternates: list[AMQPParams] = field(default_factory=list)
    strategy: str | Callable[[Sequence[AMQPParams]], Iterator[AMQPParams]] = "round-robin"
    #: Which of ``[self, *alternates]`` answered last (round-robin starts there).
    current: int = 0

    def describe(self) -> str:
        if not self.alternates:
            return mask_url(self.url)
        urls = [self, *self.alternates]
        return f"{mask_url(urls[self.current].url)} (one of {len(urls)} failover URLs)"


STRATEGIES = ("round-robin", "shuffle")


def parse_url(url: str, options: Mapping[str, Any] | None = None) -> AMQPParams:
    """Connection parameters from ``url``; ``options`` may carry the app's ``broker_*`` settings.

    Recognised options: ``broker_use_ssl``, ``broker_heartbeat``,
    ``broker_connection_timeout``, ``broker_login_method``, ``broker_failover_strategy``
    (the app passes them), and the transport options ``heartbeat``/``connect_timeout``
    which win over them.
    """
    options = options or {}
    first, *others = [part.strip() for part in url.split(";") if part.strip()] or [url]
    params = _parse_one(first, options)
    params.alternates = [_parse_one(other, options) for other in others]
    strategy = options.get("broker_failover_strategy") or "round-robin"
    if not callable(strategy) and strategy not in STRATEGIES:
        raise ImproperlyConfigured(
            f"broker_failover_strategy must be one of {', '.join(STRATEGIES)} or a callable,"
            f" not {strategy!r}"
        )
    params.strategy = strategy
    return params


def _parse_one(url: str, options: Mapping[str, Any]) -> AMQPParams:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r} is not an AMQP URL: expected amqp://, amqps:// or pyamqp://"
        )
    try:
        port = parts.port or SCHEMES[scheme]
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad port in {mask_url(url)!r}: {exc}") from None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    use_ssl: Any = options.get("broker_use_ssl") or False
    if scheme.endswith("s") and not use_ssl:
        use_ssl = True
    heartbeat = options.get("heartbeat", options.get("broker_heartbeat"))
    timeout = options.get("connect_timeout", options.get("broker_connection_timeout", 4.0))
    return AMQPParams(
        url=url,
        host=parts.hostname or "localhost",
        port=port,
        userid=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        virtual_host=unquote(path) or "/",
        ssl=dict(use_ssl) if isinstance(use_ssl, Mapping) else bool(use_ssl),
        heartbeat=float(heartbeat or 0),
        connect_timeout=None if timeout is None else float(timeout),
        login_method=options.get("broker_login_method"),
    )


def operational_error(params: AMQPParams, exc: BaseException, doing: str) -> OperationalError:
    """``exc`` as our error; the caller chains it (``raise ... from exc``). ``Unreachable``
    unless RabbitMQ answered (a channel error: a missing queue, a refused argument)."""
    kind = OperationalError if isinstance(exc, amqp.exceptions.ChannelError) else Unreachable
    return kind(f"AMQP broker {params.describe()}: {doing} failed: {exc!r}")


def connect(params: AMQPParams) -> amqp.Connection:
    """An open connection, or ``OperationalError`` (the cause chained, the password masked).

    With failover URLs each is tried once, in the strategy's order; the error names them all.
    """
    if not params.alternates:
        return _connect_one(params)
    candidates = [params, *params.alternates]
    failures: list[str] = []
    for candidate in _attempt_order(params, candidates):
        try:
            conn = _connect_one(candidate)
        except OperationalError as exc:
            failures.append(str(exc))
            logger.warning("%s; trying the next failover URL", exc)
            continue
        params.current = candidates.index(candidate)
        return conn
    raise Unreachable("no failover URL answered: " + "; ".join(failures))


def _attempt_order(params: AMQPParams, candidates: list[AMQPParams]) -> list[AMQPParams]:
    if params.strategy == "round-robin":
        return candidates[params.current :] + candidates[: params.current]
    if params.strategy == "shuffle":
        return random.sample(candidates, len(candidates))
    assert callable(params.strategy)
    return list(itertools.islice(params.strategy(candidates), len(candidates)))


def _connect_one(params: AMQPParams) -> amqp.Connection:
    conn = amqp.Connection(
        host=f"{params.host}:{params.port}",
        userid=params.userid,
        password=params.password,
        virtual_host=params.virtual_host,
        ssl=params.ssl,
        heartbeat=params.heartbeat,
        connect_timeout=params.connect_timeout,
        login_method=params.login_method,
        client_properties={"product": "caraway", **params.client_properties},
    )
    try:
        conn.connect()
    except CONNECTION_ERRORS as exc:
        close_quietly(conn)
        raise operational_error(params, exc, "connecting") from exc
    return conn


def close_quietly(conn: amqp.Connection | None) -> None:
    """Close a connection that may already be broken; never raises."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # a dead socket: free what py-amqp holds, best effort
        with contextlib.suppress(Exception):
            conn.collect()


class Link:
    """One connection and its single channel, used under ``lock`` only: the broker's consuming
    and publishing connections, and the rpc backend's writer and reader."""

    def __init__(self, params: AMQPParams, on_open: Callable[[Any], None] | None = None) -> None:
        self.params = params
        self.lock = threading.RLock()
        self.conn: Any = None
        self.channel: Any = None
        self.generation = 0
        #: The connection closed since the consumer last looked (``take_loss``).
        self.lost = False
        self.declared: set[str] = set()
        self._on_open = on_open
        after_fork_in_child(self._forget_parent)

    def _forget_parent(self) -> None:
        """In a forked child: open a connection of its own on first use (the parent's socket
        is left alone: py-amqp only closes its file descriptor when collected)."""
        self.lock = threading.RLock()
        self.conn = self.channel = None
        self.declared = set()

    def open(self) -> Any:
        if self.channel is None:
            conn = connect(self.params)
            try:
                channel = conn.channel()
                if self._on_open is not None:
                    self._on_open(channel)
            except CONNECTION_ERRORS as exc:
                close_quietly(conn)
                raise operational_error(self.params, exc, "opening a channel") from exc
            # The generation first: whoever sees the new channel sees its generation too.
            self.generation += 1
            self.conn, self.channel = conn, channel
            self.declared.clear()
        return self.channel

    def drop(self) -> None:
        conn, self.conn, self.channel = self.conn, None, None
        self.lost = self.lost or conn is not None
        close_quietly(conn)

    def take_loss(self) -> bool:
        """Whether the connection closed since the last call (whoever noticed it)."""
        lost, self.lost = self.lost, False
        return lost

    def call(self, doing: str, fun: Callable[[Any], T]) -> T:
        """``fun(channel)`` under the lock; a failure drops the connection (next call reopens).

        A connection that was open before the call may have died while idle: then ``fun``
        runs once more on a new one (at-least-once, like any publish retry).
        """
        with self.lock:
            stale = self.channel is not None
            channel = self.open()
            try:
                return fun(channel)
            except CONNECTION_ERRORS as exc:
                self.drop()
                if not stale or isinstance(exc, amqp.exceptions.ChannelError):
                    raise operational_error(self.params, exc, doing) from exc
            channel = self.open()
            try:
                return fun(channel)
            except CONNECTION_ERRORS as exc:
                self.drop()
                raise operational_error(self.params, exc, doing) from exc
