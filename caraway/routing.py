"""``task_routes``: which queue a task goes to.

Precedence, as Celery documents it: options given to ``apply_async``, then the task's own
``queue``/``routing_key``/... attributes, then the routers of ``task_routes``, then
``task_default_queue``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from caraway.exceptions import ImproperlyConfigured, QueueNotFound
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
    names: dict[str, None] = {}
    for queue in task_queues or ():
        if isinstance(queue, str):
            names[queue] = None
        elif isinstance(queue, Mapping):
            names[str(queue["name"])] = None
        else:
            names[str(queue.name)] = None
    return list(names)


def worker_queues(
    requested: Iterable[str] | None, default_queue: str, task_queues: Any, create_missing: bool
) -> list[str]:
    """The queues a worker consumes: ``-Q``, else every queue of ``task_queues``, else the
    default queue (Celery's rule). Queues ``-Q`` names outside ``task_queues`` are created
    unless ``task_create_missing_queues`` is off, which makes them an error."""
    declared = declared_queues(task_queues)
    chosen = list(dict.fromkeys(requested or ())) or declared or [default_queue]
    known = set(declared) or {default_queue}
    missing = [queue for queue in chosen if queue not in known]
    if missing and not create_missing:
        raise ImproperlyConfigured(
            f"the worker is asked to consume {', '.join(map(repr, missing))}, not defined in "
            f"task_queues ({', '.join(sorted(known))}), and task_create_missing_queues is off: "
            "add the queue to task_queues, or turn task_create_missing_queues on"
        )
    return chosen


def resolve_queue(route: Route, default_queue: str, task_queues: Any, create_missing: bool) -> str:
    """The queue a message goes to; unknown queues are an error when they may not be created."""
    queue: Any = route.get("queue")
    if isinstance(queue, Mapping):
        queue = queue["name"]
    elif queue is not None and hasattr(queue, "name"):
        queue = queue.name
    queue = queue or default_queue
    # Without task_queues, the default queue is the only one declared (as in Celery).
    known = queue_names(task_queues) or {default_queue}
    if queue not in known and not create_missing:
        raise QueueNotFound(
            f"queue {queue!r} is not defined in task_queues ({', '.join(sorted(known))})"
            " and task_create_missing_queues is off"
        )
    return str(queue)
