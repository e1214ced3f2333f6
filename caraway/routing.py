"""``task_routes``: which queue a task goes to.

Precedence, as Celery documents it: options given to ``apply_async``, then the task's own
``queue``/``routing_key``/... attributes, then the routers of ``task_routes``, then
``task_default_queue``.
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caraway.engines.base.topology import EXCHANGE_TYPES, QueueDeclaration
from caraway.exceptions import ImproperlyConfigured, QueueNotFound
from caraway.queues import Exchange, Queue
from caraway.utils.imports import symbol_by_name

Route = dict[str, Any]
Router = Callable[..., Any]
ROUTE_KEYS = ("queue", "exchange", "routing_key", "priority")


def expand_route(route: Any) -> Route:
    """A route may be a queue name or a dict of options."""
    if route is None:
        return {}
    if isinstance(route, str):
        return {"queue": route}
    if isinstance(route, Mapping):
        return dict(route)
    raise ImproperlyConfigured(
        f"a route must be a queue name or a dict of options, got {type(route).__name__}"
    )


class MapRouter:
    """Exact task names, globs (``'proj.*'``) or compiled regexes mapped to routes.

    Given as a dict, or as a list of ``(pattern, route)`` pairs when the order of the
    patterns matters (Celery's "items format").
    """

    def __init__(self, routes: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        items = routes.items() if isinstance(routes, Mapping) else routes
        for key, route in items:
            if isinstance(key, re.Pattern):
                self.patterns.append((key, route))
            elif any(ch in key for ch in "*?["):
                self.patterns.append((re.compile(fnmatch.translate(key)), route))
            else:
                self.exact[key] = route

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self.exact:
            return self.exact[name]
        for pattern, route in self.patterns:
            if pattern.match(name):
                return route
        return None


def prepare_routers(routes: Any) -> list[Router]:
    """``task_routes`` as a list of callables: dicts, functions, import paths, or a list."""
    if routes is None:
        return []
    if not isinstance(routes, list | tuple):
        routes = [routes]
    routers: list[Router] = []
    for route in routes:
        if isinstance(route, Mapping) or (
            isinstance(route, list | tuple) and all(_is_pair(item) for item in route)
        ):
            routers.append(MapRouter(route))
        elif isinstance(route, str):
            routers.append(symbol_by_name(route))
        elif callable(route):
            routers.append(route)
        else:
            raise ImproperlyConfigured(
                f"task_routes entries must be dicts, router functions or import paths, "
                f"got {route!r}"
            )
    return routers


def _is_pair(item: Any) -> bool:
    return isinstance(item, list | tuple) and len(item) == 2 and not callable(item[0])


def lookup(
    routers: Sequence[Router],
    name: str,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
    task: Any = None,
) -> Route:
    """The first route a router gives, called with Celery's router signature."""
    for router in routers:
        route = router(name, args, kwargs, options, task=task)
        if route:
            return expand_route(route)
    return {}


def queue_names(task_queues: Any) -> set[str] | None:
    """Names of the queues in ``task_queues`` (names, dicts, or kombu-like ``Queue`` objects)."""
    return set(declared_queues(task_queues)) or None


def declared_queues(task_queues: Any) -> list[str]:
    """``task_queues``' names in the order given (duplicates once)."""
    return list(dict.fromkeys(queue_name(queue) for queue in task_queues or ()))


def worker_queues(
    requested: Iterable[str] | None, default_queue: str, task_queues: Any, create_missing: bool
) -> list[str]:
    """The queues a worker consumes: ``-Q``, else every queue of ``task_queues``, else the
    default queue (Celery's rule). ``-Q`` may name a queue by its alias (a ``Broadcast``'s
    exchange name). Queues ``-Q`` names outside ``task_queues`` are created unless
    ``task_create_missing_queues`` is off, which makes them an error."""
    declared = declared_queues(task_queues)
    aliases = {queue_alias(q): queue_name(q) for q in task_queues or () if queue_alias(q)}
    wanted = [aliases.get(name, name) for name in requested or ()]
    chosen = list(dict.fromkeys(wanted)) or declared or [default_queue]
    known = set(declared) or {default_queue}
    missing = [queue for queue in chosen if queue not in known]
    if missing and not create_missing:
        raise ImproperlyConfigured(
            f"the worker is asked to consume {', '.join(map(repr, missing))}, not defined in "
            f"task_queues ({', '.join(sorted(known))}), and task_create_missing_queues is off: "
            "add the queue to task_queues, or turn task_create_missing_queues on"
        )
    return chosen


#: Destinations kept per queue name (names can be made up per call: the cache stays bounded).
NAMES_KEPT = 1024


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one message goes: the route's queue, and the exchange and key it is published
    with (exchange ``""``: straight to ``queue``). ``declaration`` is how the route's queue
    is declared before publishing; None for a broadcast queue, which only workers declare."""

    queue: str
    exchange: str
    routing_key: str
    exchange_type: str
    declaration: QueueDeclaration | None


class QueueTable:
    """``task_queues`` with Celery's defaults applied: queues by name and alias, the default
    queue when none is configured, and queues created on first use when allowed."""

    def __init__(self, conf: Any) -> None:
        default_queue = str(conf.task_default_queue)
        self.default_queue = default_queue
        self.default_exchange = Exchange(
            conf.task_default_exchange or default_queue, conf.task_default_exchange_type
        )
        self.default_routing_key = str(conf.task_default_routing_key or default_queue)
        self.create_missing = bool(conf.task_create_missing_queues)
        self.missing_exchange_type = conf.task_create_missing_queue_exchange_type or "direct"
        entries = [as_queue(entry) for entry in conf.task_queues or ()]
        if not entries:
            entries = [Queue(default_queue, self.default_exchange, self.default_routing_key)]
        self.queues = {queue_name(queue): queue for queue in entries}
        self.aliases = {queue_alias(queue): queue for queue in entries if queue_alias(queue)}
        # Every send asks: destinations of routes naming only a queue, by its name.
        self._by_name: dict[str, Destination] = {}

    def get(self, name: str) -> Any:
        """The queue called ``name`` (or aliased so), created when missing queues may be."""
        queue = self.aliases.get(name) or self.queues.get(name)
        if queue is not None:
            return queue
        if not self.create_missing:
            raise QueueNotFound(
                f"queue {name!r} is not defined in task_queues"
                f" ({', '.join(sorted(self.queues))}) and task_create_missing_queues is off"
            )
        return Queue(name, Exchange(name, self.missing_exchange_type), name)

    def declaration(self, queue: Any) -> QueueDeclaration:
        return declaration(queue, self.default_exchange, self.default_routing_key)

    def exchange_type(self, exchange: str) -> str | None:
        """The type of a named exchange as ``task_queues`` declares it, if it does."""
        for queue in self.queues.values():
            bound = self.declaration(queue)
            if bound.exchange == exchange:
                return bound.exchange_type
        return None

    def destination(self, route: Route) -> Destination:
        """Celery's rule: a direct route without both an exchange and a key goes straight to
        its queue; otherwise to the given exchange, else the queue's own, with the given key,
        else the queue's key, else ``task_default_routing_key``."""
        queue: Any = route.get("queue") or self.default_queue
        only_a_name = isinstance(queue, str) and not (
            route.get("exchange") or route.get("routing_key") or route.get("exchange_type")
        )
        if only_a_name:
            known = self._by_name.get(queue)
            if known is None:
                if len(self._by_name) >= NAMES_KEPT:
                    self._by_name.clear()
                known = self._by_name[queue] = self._destination({"queue": self.get(queue)})
            return known
        return self._destination(route)

    def _destination(self, route: Route) -> Destination:
        queue: Any = route.get("queue") or self.default_queue
        if isinstance(queue, str | Mapping):
            queue = self.get(queue_name(queue))
        bound = self.declaration(queue)
        exchange: Any = route.get("exchange")
        exchange_name = None if exchange is None else str(getattr(exchange, "name", exchange))
        routing_key = route.get("routing_key")
        kind = route.get("exchange_type") or bound.exchange_type
        declare = None if bound.broadcast else bound
        if (not exchange_name or not routing_key) and kind == "direct":
            return Destination(bound.queue, "", bound.queue, "direct", declare)
        if exchange_name is None:
            exchange_name = bound.exchange
            routing_key = routing_key or bound.routing_key or self.default_routing_key
        if exchange_name == bound.exchange:
            kind = bound.exchange_type
        else:
            kind = (
                route.get("exchange_type")
                or getattr(exchange, "type", None)
                or self.exchange_type(exchange_name)
                or "direct"
            )
        return Destination(bound.queue, exchange_name, str(routing_key or ""), kind, declare)


#: The last table built per configuration (by id, its weak reference telling a reused id
#: apart), with the settings it was built from.
_TABLES: dict[int, tuple[weakref.ref[Any], tuple[Any, ...], QueueTable]] = {}
_TABLE_SETTINGS = (
    "task_default_queue", "task_default_exchange", "task_default_exchange_type",
    "task_default_routing_key", "task_create_missing_queues",
    "task_create_missing_queue_exchange_type",
)  # fmt: skip


def queue_table(conf: Any) -> QueueTable:
    """The ``QueueTable`` of ``conf``, built again only when its settings change (every
    send reads it; a ``Broadcast`` must keep its one generated name)."""
    key = (tuple(conf.task_queues or ()), *(getattr(conf, name) for name in _TABLE_SETTINGS))
    cached = _TABLES.get(id(conf))
    if cached is not None and cached[0]() is conf and cached[1] == key:
        return cached[2]
    table = QueueTable(conf)
    _TABLES[id(conf)] = (weakref.ref(conf, lambda _: _TABLES.pop(id(conf), None)), key, table)
    return table


# --- task_queues entries: names, dicts, caraway.queues or kombu objects ---------------------


def queue_name(queue: Any) -> str:
    """The name of a ``task_queues`` entry: a name, a dict or a ``Queue``-like object."""
    if isinstance(queue, str):
        return queue
    if isinstance(queue, Mapping):
        return str(queue["name"])
    return str(queue.name)


def queue_alias(queue: Any) -> str | None:
    alias = queue.get("alias") if isinstance(queue, Mapping) else getattr(queue, "alias", None)
    return str(alias) if alias else None


def as_queue(entry: Any) -> Any:
    """A ``task_queues`` entry as a ``Queue``-like object (names and dicts become ``Queue``).

    A bare name keeps the plain layout (its own direct exchange and key); a dict's key
    defaults to its name, as in Celery's dict form."""
    if isinstance(entry, str):
        return Queue(entry, Exchange(entry), entry)
    if isinstance(entry, Mapping):
        options = dict(entry)
        binding_key = options.pop("binding_key", None)
        options.setdefault("routing_key", binding_key or options.get("name", ""))
        exchange = options.pop("exchange", None)
        kind = options.pop("exchange_type", None)
        if isinstance(exchange, str) and kind is not None:
            exchange = Exchange(exchange, kind)
        return Queue(exchange=exchange, **options)
    if not hasattr(entry, "name"):
        raise ImproperlyConfigured(
            f"task_queues entries must be queue names, dicts or Queue objects, got {entry!r}"
        )
    return entry


def declaration(
    queue: Any, default_exchange: Exchange, default_routing_key: str
) -> QueueDeclaration:
    """How ``queue`` is declared and bound, with Celery's defaults: a queue without an
    exchange is bound to ``task_default_exchange``, without a key to
    ``task_default_routing_key``."""
    exchange = getattr(queue, "exchange", None)
    if isinstance(exchange, str):
        exchange = Exchange(exchange)
    if exchange is None or not exchange.name:
        exchange = default_exchange
    kind = str(exchange.type or "direct")
    if kind not in EXCHANGE_TYPES:
        raise ImproperlyConfigured(
            f"queue {queue.name!r} is bound to exchange {exchange.name!r} of type {kind!r}:"
            f" caraway routes through {', '.join(EXCHANGE_TYPES)} exchanges only"
        )
    return QueueDeclaration(
        queue=str(queue.name),
        exchange=str(exchange.name),
        exchange_type=kind,
        routing_key=str(getattr(queue, "routing_key", "") or default_routing_key),
        durable=bool(getattr(queue, "durable", True)),
        exclusive=bool(getattr(queue, "exclusive", False)),
        auto_delete=bool(getattr(queue, "auto_delete", False)),
        exchange_durable=bool(getattr(exchange, "durable", True)),
        exchange_auto_delete=bool(getattr(exchange, "auto_delete", False)),
        arguments=dict(getattr(queue, "queue_arguments", None) or {}),
    )
