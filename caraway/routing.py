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
    if not task_queues:
        return None
    return {_queue_name(queue) for queue in task_queues}


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


class QueueDeclarations:
    """Celery's ``app.amqp`` as far as caraway has it: the queues a worker consumes by default.

    ``queues`` maps each name of ``task_queues`` to its declaration, or holds only
    ``task_default_queue`` when ``task_queues`` is not set (Celery's default).
    """

    def __init__(self, task_queues: Any, default_queue: str) -> None:
        self._task_queues = task_queues
        self._default_queue = default_queue

    @property
    def queues(self) -> dict[str, Any]:
        if not self._task_queues:
            return {self._default_queue: self._default_queue}
        return {_queue_name(queue): queue for queue in self._task_queues}


def _queue_name(queue: Any) -> str:
    if isinstance(queue, str):
        return queue
    if isinstance(queue, Mapping):
        return str(queue["name"])
    return str(queue.name)
