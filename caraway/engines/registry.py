"""Engines chosen by URL scheme, imported lazily so extras stay optional, and the app's
broadcast engine (made by its broker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caraway.engines.memory.beat_store import MemoryStore
from caraway.exceptions import ImproperlyConfigured, MissingExtra
from caraway.utils.imports import symbol_by_name
from caraway.utils.text import did_you_mean, mask_url
from caraway.utils.time import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.backend import Backend, BackendCapabilities
    from caraway.engines.base.beat_store import BeatStore
    from caraway.engines.base.broker import Broker
    from caraway.engines.base.fanout import Fanout

#: scheme -> (engine class, extra that provides its client library or None)
BROKERS: dict[str, tuple[str, str | None]] = {
    "memory": ("caraway.engines.memory.broker:MemoryBroker", None),
    "sqlite": ("caraway.engines.sqlite.broker:SQLiteBroker", None),
    "redis": ("caraway.engines.redis.broker:RedisBroker", "redis"),
    "rediss": ("caraway.engines.redis.broker:RedisBroker", "redis"),
    "sentinel": ("caraway.engines.redis.broker:RedisBroker", "redis"),
    "redis+socket": ("caraway.engines.redis.broker:RedisBroker", "redis"),
    "unix": ("caraway.engines.redis.broker:RedisBroker", "redis"),
    "amqp": ("caraway.engines.amqp.broker:AMQPBroker", "amqp"),
    "amqps": ("caraway.engines.amqp.broker:AMQPBroker", "amqp"),
    "pyamqp": ("caraway.engines.amqp.broker:AMQPBroker", "amqp"),
}
BACKENDS: dict[str, tuple[str, str | None]] = {
    "cache+memory": ("caraway.engines.memory.backend:MemoryBackend", None),
    "memory": ("caraway.engines.memory.backend:MemoryBackend", None),
    "sqlite": ("caraway.engines.sqlite.backend:SQLiteBackend", None),
    "redis": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "rediss": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "sentinel": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "redis+socket": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "unix": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "disabled": ("caraway.engines.base.disabled:DisabledBackend", None),
    "db+postgresql": ("caraway.engines.sql.backend:SQLBackend", "postgresql"),
    "db+postgresql+psycopg": ("caraway.engines.sql.backend:SQLBackend", "postgresql"),
    "db+mysql": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+mysql+pymysql": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+mariadb": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+mariadb+pymysql": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+sqlite": ("caraway.engines.sql.backend:SQLBackend", "sql"),
    "rpc": ("caraway.engines.amqp.rpc_backend:RPCBackend", "amqp"),
}


#: The broker when ``broker_url`` is not set: the embedded file, which keeps results too.
DEFAULT_BROKER_URL = "sqlite://"


def embedded_url(path: Path) -> str:
    """The URL of the embedded engine's file at ``path`` (messages and results in one)."""
    return f"sqlite:///{path}"  # SQLAlchemy's form: four slashes for an absolute path


def in_process_beat_store(clock: Clock = SYSTEM_CLOCK) -> BeatStore:
    """Beat state kept in this process only (the base scheduler's): the memory engine's."""
    return MemoryStore(clock)


def scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r} is not a URL: expected scheme://..., e.g. 'redis://localhost'"
        )
    return scheme.lower()


def _load(table: dict[str, tuple[str, str | None]], url: str, kind: str) -> Any:
    scheme = scheme_of(url)
    if scheme not in table:
        raise ImproperlyConfigured(
            f"unknown {kind} scheme {scheme!r} in {mask_url(url)!r}."
            f"{did_you_mean(scheme, table)} Known schemes: {', '.join(sorted(table))}."
        )
    path, extra = table[scheme]
    try:
        return symbol_by_name(path)
    except ImportError as exc:
        if extra is None:
            raise
        raise MissingExtra(
            f'the {scheme}:// {kind} needs an extra: pip install "caraway[{extra}]"'
        ) from exc


#: Schemes whose engine takes a ``;``-separated list: RabbitMQ's failover alternates, and
#: Sentinel's list of sentinels (one master behind them).
LIST_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "pyamqps", "sentinel"})


def one_url(url: str | Sequence[str]) -> str:
    """``broker_url`` as one string: Celery also takes a list of failover URLs."""
    return url if isinstance(url, str) else ";".join(url)


def create_broker(url: str | Sequence[str], options: Mapping[str, Any] | None = None) -> Broker:
    url = one_url(url)
    urls = [part.strip() for part in url.split(";") if part.strip()]
    if len(urls) > 1:
        schemes = sorted({scheme_of(part) for part in urls})
        if len(schemes) > 1:
            raise ImproperlyConfigured(
                f"failover broker URLs must share one scheme, got {', '.join(schemes)}"
            )
        if schemes[0] not in LIST_SCHEMES:
            raise ImproperlyConfigured(
                f"a list of {schemes[0]}:// broker URLs is not supported: failover lists are for"
                " RabbitMQ (amqp://); for Redis, name the Sentinels"
                " (sentinel://h1:26379;sentinel://h2:26379 with master_name in"
                " broker_transport_options)"
            )
    cls = _load(BROKERS, url, "broker")
    broker: Broker = cls(url, options)
    return broker


def backend_capabilities(url: str) -> BackendCapabilities:
    """What the backend for ``url`` can do, read from its class: nothing is connected."""
    capabilities: BackendCapabilities = _load(BACKENDS, url, "result backend").capabilities
    return capabilities


def default_backend_url(broker_url: str | Sequence[str] | None) -> str:
    """``result_backend`` when none is set: the broker's own store when its engine keeps
    results there (``keeps_results``), else results are disabled, as in Celery. A broker
    whose engine cannot be loaded gives its own error when it is made."""
    url = one_url(broker_url or DEFAULT_BROKER_URL)
    try:
        keeps = _load(BROKERS, url, "broker").capabilities.keeps_results
    except (ImproperlyConfigured, ImportError):
        return "disabled://"
    return url if keeps else "disabled://"


def create_backend(app: Caraway, url: str, options: Mapping[str, Any] | None = None) -> Backend:
    cls = _load(BACKENDS, url, "result backend")
    backend: Backend = cls(app, url, options)
    return backend


def fanout_of(app: Caraway) -> Fanout:
    """The app's client-side broadcast engine, made on first use and closed by ``app.close()``."""
    found: Fanout | None = app.__dict__.get("_fanout")
    if found is None:
        found = app.__dict__["_fanout"] = app.broker.fanout()
    return found
