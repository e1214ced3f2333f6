"""Routing: which queue a message goes to, with Celery's precedence and router forms."""

from __future__ import annotations

import re
from typing import Any

import pytest

from caraway import Caraway
from caraway.contrib.testing.worker import start_worker
from caraway.engines.base.broker import Outgoing
from caraway.exceptions import ImproperlyConfigured, QueueNotFound
from caraway.routing import (
    MapRouter,
    expand_route,
    lookup,
    prepare_routers,
    queue_table,
    worker_queues,
)
from caraway.task import Task


def _task(app: Caraway, name: str, **options: Any) -> Task[Any, Any]:
    def body(*args: Any, **kwargs: Any) -> None:
        return None

    return app.task(name=name, **options)(body)


def _queue(published: list[Outgoing]) -> str:
    sent = published.pop()
    assert sent.message.properties["delivery_info"] == {"exchange": "", "routing_key": sent.queue}
    return sent.queue


# --- precedence ---------------------------------------------------------------------------


def test_default_queue(app: Caraway, published: list[Outgoing]) -> None:
    _task(app, "proj.plain").delay()
    assert _queue(published) == "celery"

    app.conf.task_default_queue = "work"
    _task(app, "proj.other").delay()
    assert _queue(published) == "work"


def test_precedence_explicit_then_task_attribute_then_routes_then_default(
    app: Caraway, published: list[Outgoing]
) -> None:
    app.conf.task_routes = {"proj.*": {"queue": "from-routes"}}
    routed = _task(app, "proj.routed")
    attributed = _task(app, "proj.attributed", queue="from-task")
    unrouted = _task(app, "other.unrouted")

    attributed.apply_async(queue="explicit")
    assert _queue(published) == "explicit"
    attributed.delay()
    assert _queue(published) == "from-task"
    routed.delay()
    assert _queue(published) == "from-routes"
    unrouted.delay()
    assert _queue(published) == "celery"


def test_send_task_uses_routes_too(app: Caraway, published: list[Outgoing]) -> None:
    app.conf.task_routes = {"remote.*": "remote-q"}

    app.send_task("remote.job")
    assert _queue(published) == "remote-q"
    app.send_task("remote.job", queue="explicit")
    assert _queue(published) == "explicit"


def test_route_can_set_priority(app: Caraway, published: list[Outgoing]) -> None:
    app.conf.task_routes = {"proj.urgent": {"queue": "fast", "priority": 9}}

    _task(app, "proj.urgent").delay()

    sent = published[-1]
    assert (sent.queue, sent.priority, sent.message.properties["priority"]) == ("fast", 9, 9)


def test_routes_from_config_from_object(app: Caraway, published: list[Outgoing]) -> None:
    app.config_from_object({"task_routes": {"proj.cfg": "configured"}})

    _task(app, "proj.cfg").delay()

    assert _queue(published) == "configured"


# --- router forms -------------------------------------------------------------------------


def test_exact_names_beat_globs_and_globs_match_in_order() -> None:
    router = MapRouter({"proj.*": "glob", "proj.special": "exact", "proj.sp?cial2": "single"})

    assert router("proj.special", (), {}, {}) == "exact"
    assert router("proj.anything", (), {}, {}) == "glob"
    assert router("other.task", (), {}, {}) is None


def test_glob_does_not_match_a_prefix_only() -> None:
    router = MapRouter({"feed.tasks.*": "feeds"})

    assert router("feed.tasks.import", (), {}, {}) == "feeds"
    assert router("feed.tasksx", (), {}, {}) is None
    assert router("xfeed.tasks.import", (), {}, {}) is None


def test_regex_keys_are_patterns() -> None:
    router = MapRouter({re.compile(r"(image|video)\.tasks\..*"): {"queue": "media"}})

    assert router("video.tasks.encode", (), {}, {}) == {"queue": "media"}
    assert router("audio.tasks.encode", (), {}, {}) is None


def test_router_function_gets_celerys_arguments(app: Caraway, published: list[Outgoing]) -> None:
    seen: list[tuple[Any, ...]] = []

    def route_task(
        name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **kw: Any
    ) -> Any:
        seen.append((name, tuple(args), kwargs, dict(options), task))
        return {"queue": "by-function"} if name.startswith("proj.") else None

    app.conf.task_routes = (route_task,)
    task = _task(app, "proj.fn")

    task.apply_async((1, 2), {"k": "v"}, countdown=5)

    assert _queue(published) == "by-function"
    name, args, kwargs, options, given_task = seen[0]
    assert (name, args, kwargs) == ("proj.fn", (1, 2), {"k": "v"})
    assert options["countdown"] == 5
    assert given_task is task


def test_list_of_routers_first_answer_wins(app: Caraway, published: list[Outgoing]) -> None:
    def never(name: str, *args: Any, **kwargs: Any) -> None:
        return None

    app.conf.task_routes = [never, {"proj.a": "first"}, {"proj.*": "second"}]

    _task(app, "proj.a").delay()
    assert _queue(published) == "first"
    _task(app, "proj.b").delay()
    assert _queue(published) == "second"


def test_router_by_dotted_path() -> None:
    routers = prepare_routers("caraway.routing.expand_route")

    assert routers == [expand_route]


def test_bad_router_entry_is_an_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="task_routes"):
        prepare_routers([42])
    with pytest.raises(ImproperlyConfigured, match="queue name or a dict"):
        expand_route(42)


def test_lookup_expands_a_queue_name_to_a_route() -> None:
    routers = prepare_routers({"a": "qa"})

    assert lookup(routers, "a", (), {}, {}) == {"queue": "qa"}
    assert lookup(routers, "b", (), {}, {}) == {}


# --- queues that must exist ---------------------------------------------------------------


def test_missing_queue_is_created_by_default(app: Caraway, published: list[Outgoing]) -> None:
    app.conf.task_queues = ["celery"]

    _task(app, "proj.t").apply_async(queue="brand-new")

    assert _queue(published) == "brand-new"


def test_missing_queue_is_an_error_when_it_may_not_be_created(
    app: Caraway, published: list[Outgoing]
) -> None:
    app.conf.task_create_missing_queues = False
    app.conf.task_queues = ["celery", {"name": "known"}]
    task = _task(app, "proj.t")

    task.apply_async(queue="known")
    assert _queue(published) == "known"
    with pytest.raises(QueueNotFound, match="'unknown'"):
        task.apply_async(queue="unknown")
    assert published == []


def _queue_of(route: dict[str, Any], task_queues: Any, create_missing: bool = False) -> str:
    app = Caraway("routes", task_queues=task_queues, task_create_missing_queues=create_missing)
    return queue_table(app.conf).destination(route).queue


def test_without_task_queues_only_the_default_queue_exists() -> None:
    assert _queue_of({}, None) == "celery"
    with pytest.raises(QueueNotFound):
        _queue_of({"queue": "elsewhere"}, None)


def test_queue_objects_with_a_name_attribute_are_understood() -> None:
    class Queue:
        def __init__(self, name: str) -> None:
            self.name = name

    assert _queue_of({"queue": Queue("q")}, [Queue("q")]) == "q"
    assert _queue_of({"queue": {"name": "q"}}, [{"name": "q"}]) == "q"


# --- the queues a worker consumes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "task_queues", "expected"),
    [
        (None, None, ["celery"]),
        (None, ["beta", {"name": "alpha"}, "beta"], ["beta", "alpha"]),
        (["alpha"], ["alpha", "beta"], ["alpha"]),
        (["gamma"], ["alpha"], ["gamma"]),  # created: task_create_missing_queues is on
    ],
)
def test_a_worker_consumes_q_else_every_declared_queue_else_the_default(
    requested: list[str] | None, task_queues: Any, expected: list[str]
) -> None:
    assert worker_queues(requested, "celery", task_queues, create_missing=True) == expected


def test_a_missing_queue_is_refused_when_it_may_not_be_created() -> None:
    with pytest.raises(ImproperlyConfigured, match="consume 'gamma', not defined in task_q"):
        worker_queues(["alpha", "gamma"], "celery", ["alpha"], create_missing=False)
    assert worker_queues(["celery"], "celery", None, create_missing=False) == ["celery"]


def test_a_worker_without_q_runs_tasks_of_every_declared_queue(app: Caraway) -> None:
    app.conf.task_queues = ["alpha", "beta"]
    add = app.task(name="proj.add")(lambda x, y: x + y)
    with start_worker(app, pool="solo", perform_ping_check=False) as worker:
        assert sorted(worker.queues) == ["alpha", "beta"]
        results = [
            add.apply_async((1, n), queue=queue) for n, queue in enumerate(["alpha", "beta"])
        ]
        assert [result.get(timeout=10) for result in results] == [1, 2]
