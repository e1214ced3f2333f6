"""Engines chosen by URL, imported lazily so extras stay optional, and the app's broadcast
engine (made by its broker).

How ``broker_url`` / ``result_backend`` find their engine class, first match wins:

1. the scheme (before ``://``, any case) in the built-in table (``BROKERS`` / ``BACKENDS``),
   or the whole setting when it is a bare name there (``"django-db"``, as in Celery); then
   Celery's ``<engine>+<that engine's URL>``: ``db+<any SQLAlchemy URL>`` for results
   (``BACKEND_FAMILIES``), ``kombu+<transport>://`` and ``sqla+...`` for brokers
   (``BROKER_FAMILIES``);
2. an entry point of that name (lower case) in the group ``caraway.brokers`` /
   ``caraway.backends`` of an installed distribution, so ``pip install caraway-toy`` makes
   ``toy://`` work. A plug-in cannot take over a built-in scheme;
3. a dotted class path, ``pkg.module:Class`` or ``pkg.module.Class``, given as the scheme
   (``"mypkg.engines:MyBroker://host/0"``) or as the whole setting
   (``"mypkg.engines:MyBroker"``), as Celery's ``result_backend`` accepts. It must name a
   subclass of :class:`~caraway.engines.base.broker.Broker` (or ``Backend``).

A bare scheme (``"rpc"``, ``"redis"``, ``"disabled"``) means that scheme's defaults
(``"rpc://"``), as Celery takes ``result_backend = "rpc"``. Anything else is an error that
suggests the closest known scheme. Whichever way it was found,
the engine class gets the setting unchanged as its ``url`` and parses it itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caraway.engines.base.backend import Backend
from caraway.engines.base.broker import Broker, one_url
from caraway.engines.memory.beat_store import MemoryStore
from caraway.exceptions import ImproperlyConfigured, MissingExtra
from caraway.utils.imports import symbol_by_name
from caraway.utils.text import did_you_mean, mask_url
from caraway.utils.time import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp
    from caraway.engines.base.backend import BackendCapabilities
    from caraway.engines.base.beat_store import BeatStore
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
    "redis+cluster": ("caraway.engines.redis.cluster.broker:RedisClusterBroker", "redis"),
    "rediss+cluster": ("caraway.engines.redis.cluster.broker:RedisClusterBroker", "redis"),
    "amqp": ("caraway.engines.amqp.broker:AMQPBroker", "amqp"),
    "amqps": ("caraway.engines.amqp.broker:AMQPBroker", "amqp"),
    "pyamqp": ("caraway.engines.amqp.broker:AMQPBroker", "amqp"),
    "postgresql": ("caraway.engines.postgresql.broker:PostgreSQLBroker", "postgresql"),
    "postgres": ("caraway.engines.postgresql.broker:PostgreSQLBroker", "postgresql"),
    # Celery's names of kombu's transports, which only the kombu bridge speaks.
    **{
        scheme: ("caraway.engines.kombu.broker:KombuBroker", "kombu")
        for scheme in (
            "sqs",
            "filesystem",
            "azurestoragequeues",
            "azureservicebus",
            "gcpubsub",
            "confluentkafka",
            "zookeeper",
            "consul",
            "etcd",
            "mongodb",
            "qpid",
            "pyro",
        )
    },
}
#: ``kombu+<transport>://`` (any kombu transport, ``kombu+memory://`` included) and Celery's
#: ``sqla+<SQLAlchemy URL>`` (kombu's SQLAlchemy transport) reach the kombu bridge.
BROKER_FAMILIES: dict[str, tuple[str, str | None]] = {
    "kombu": ("caraway.engines.kombu.broker:KombuBroker", "kombu"),
    "sqla": ("caraway.engines.kombu.broker:KombuBroker", "kombu"),
}
BACKENDS: dict[str, tuple[str, str | None]] = {
    "cache+memory": ("caraway.engines.memory.backend:MemoryBackend", None),
    # Celery's spellings of its memcached clients (pylibmc, python-memcached): pymemcache here.
    "cache+memcached": ("caraway.engines.memcached.backend:MemcachedBackend", "memcached"),
    "cache+memcache": ("caraway.engines.memcached.backend:MemcachedBackend", "memcached"),
    "cache+pylibmc": ("caraway.engines.memcached.backend:MemcachedBackend", "memcached"),
    "memory": ("caraway.engines.memory.backend:MemoryBackend", None),
    "sqlite": ("caraway.engines.sqlite.backend:SQLiteBackend", None),
    "redis": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "rediss": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "sentinel": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "redis+socket": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "unix": ("caraway.engines.redis.backend:RedisBackend", "redis"),
    "redis+cluster": ("caraway.engines.redis.cluster.backend:RedisClusterBackend", "redis"),
    "rediss+cluster": ("caraway.engines.redis.cluster.backend:RedisClusterBackend", "redis"),
    "disabled": ("caraway.engines.base.disabled:DisabledBackend", None),
    "db+postgresql": ("caraway.engines.sql.backend:SQLBackend", "postgresql"),
    "db+postgresql+psycopg": ("caraway.engines.sql.backend:SQLBackend", "postgresql"),
    "db+mysql": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+mysql+pymysql": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+mariadb": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+mariadb+pymysql": ("caraway.engines.sql.backend:SQLBackend", "mysql"),
    "db+sqlite": ("caraway.engines.sql.backend:SQLBackend", "sql"),
    "rpc": ("caraway.engines.amqp.rpc_backend:RPCBackend", "amqp"),
    # Celery's names without "://": django-celery-results' backend, ours in contrib.
    "django-db": ("caraway.contrib.django.backend:DjangoBackend", "django"),
}
#: Celery's ``<backend>+<that backend's own URL>``: after the table, a scheme whose part
#: before the first ``+`` is here names that engine, so every SQLAlchemy dialect and driver
#: (``db+postgresql+psycopg2://``, ``db+mysql+mysqldb://``) reaches the SQL engine.
BACKEND_FAMILIES: dict[str, tuple[str, str | None]] = {
    "db": ("caraway.engines.sql.backend:SQLBackend", "sql"),
}


#: Entry-point groups where installed distributions declare more engines, one per scheme:
#: ``[project.entry-points."caraway.brokers"] toy = "caraway_toy:ToyBroker"``.
ENTRY_POINT_GROUPS = {"broker": "caraway.brokers", "result backend": "caraway.backends"}

#: A dotted class path: ``pkg.module:Class`` or ``pkg.module.Class``.
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?")

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


def with_scheme(url: str, table: Mapping[str, object]) -> str:
    """``url``, or ``"<alias>://"`` when it is a bare scheme of ``table`` (``"rpc"``)."""
    if "://" not in url and url.lower() in table:
        return f"{url.lower()}://"
    return url


def _class_path(url: str) -> str | None:
    """The engine class path that ``url`` names, if it names one: its scheme
    (``mypkg.engines:MyBroker://host``), or the whole setting when it has no ``://``."""
    name = url.partition("://")[0]
    if ("." in name or ":" in name) and _CLASS_PATH.fullmatch(name):
        return name
    return None


def _plugins(kind: str) -> dict[str, EntryPoint]:
    """The engines installed distributions declare for ``kind``, by lower-case scheme; when
    two declare one scheme, the first on ``sys.path`` wins, as for imports."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUPS[kind]):
        found.setdefault(entry.name.lower(), entry)
    return found


def _load_plugin(entry: EntryPoint, kind: str, base: type) -> Any:
    """The class behind an entry point; a failure names who declared it."""
    dist = entry.dist.name if entry.dist is not None else "an unknown distribution"
    declared = (
        f"the {entry.name}:// {kind} engine declared by the distribution {dist!r}"
        f" (entry point {entry.name} = {entry.value!r} in group {entry.group!r})"
    )
    try:
        cls = entry.load()
    except Exception as exc:
        raise ImproperlyConfigured(f"{declared} could not be loaded: {exc!r}") from exc
    return _engine_class(cls, declared, kind, base)


def _load_class_path(path: str, kind: str, base: type) -> Any:
    try:
        cls = symbol_by_name(path)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(
            f"cannot import the {kind} engine class {path!r}: {exc}"
        ) from exc
    return _engine_class(cls, repr(path), kind, base)


def _engine_class(cls: Any, what: str, kind: str, base: type) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ImproperlyConfigured(
            f"{what} is not a {kind} engine: expected a subclass of"
            f" {base.__module__}.{base.__qualname__}, got {cls!r}"
        )
    return cls


def _unknown(
    url: str, scheme: str, table: Mapping[str, object], plugins: Mapping[str, object], kind: str
) -> ImproperlyConfigured:
    added = sorted(set(plugins) - set(table))
    known = f"Known schemes: {', '.join(sorted(table))}"
    if added:
        known += f"; from plug-ins: {', '.join(added)}"
    return ImproperlyConfigured(
        f"unknown {kind} scheme {scheme!r} in {mask_url(url)!r}."
        f"{did_you_mean(scheme, [*table, *added])} {known}."
        " An engine class may also be named by its path, e.g. 'mypkg.engines:MyEngine://...'."
    )


def _load(
    table: dict[str, tuple[str, str | None]],
    url: str,
    kind: str,
    base: type,
    families: Mapping[str, tuple[str, str | None]] | None = None,
) -> Any:
    """The engine class for ``url``: the built-in ``table`` (then its ``families``), then the
    entry points of installed distributions, then a dotted class path. The class gets ``url``
    unchanged."""
    path = _class_path(url)
    if path is None and "://" not in url and url.lower() in table:
        scheme = url.lower()  # a bare name such as "django-db"
    else:
        scheme = scheme_of(url) if path is None else path.lower()
    if scheme in table:
        return _load_builtin(table, scheme, kind)
    family, plus, _ = scheme.partition("+")
    if path is None and plus and family in (families or {}):
        return _load_builtin({scheme: (families or {})[family]}, scheme, kind)
    plugins = _plugins(kind)
    if scheme in plugins:
        return _load_plugin(plugins[scheme], kind, base)
    if path is not None:
        return _load_class_path(path, kind, base)
    raise _unknown(url, scheme, table, plugins, kind)


def _load_builtin(table: dict[str, tuple[str, str | None]], scheme: str, kind: str) -> Any:
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


def create_broker(url: str | Sequence[str], options: Mapping[str, Any] | None = None) -> Broker:
    url = with_scheme(one_url(url), BROKERS)
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
    cls = _load(BROKERS, url, "broker", Broker, BROKER_FAMILIES)
    broker: Broker = cls(url, options)
    return broker


def backend_capabilities(url: str) -> BackendCapabilities:
    """What the backend for ``url`` can do, read from its class: nothing is connected."""
    url = with_scheme(url, BACKENDS)
    capabilities: BackendCapabilities = _load(
        BACKENDS, url, "result backend", Backend, BACKEND_FAMILIES
    ).capabilities
    return capabilities


def default_backend_url(broker_url: str | Sequence[str] | None) -> str:
    """``result_backend`` when none is set: the broker's own store when its engine keeps
    results there (``keeps_results``), else results are disabled, as in Celery. A broker
    whose engine cannot be loaded gives its own error when it is made."""
    url = with_scheme(one_url(broker_url or DEFAULT_BROKER_URL), BROKERS)
    try:
        keeps = _load(BROKERS, url, "broker", Broker, BROKER_FAMILIES).capabilities.keeps_results
    except (ImproperlyConfigured, ImportError):
        return "disabled://"
    return url if keeps else "disabled://"


def create_backend(app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> Backend:
    url = with_scheme(url, BACKENDS)
    cls = _load(BACKENDS, url, "result backend", Backend, BACKEND_FAMILIES)
    backend: Backend = cls(app, url, options)
    return backend


def fanout_of(app: EngineApp) -> Fanout:
    """The app's client-side broadcast engine, made on first use and closed by ``app.close()``."""
    found: Fanout | None = app.__dict__.get("_fanout")
    if found is None:
        found = app.__dict__["_fanout"] = app.broker.fanout()
    return found
