"""Plain calls (``delay(*args)``, ``apply_async(args, kwargs)`` with no option) built from
a per-task template.

Such a call's message depends on the call only through its id, its arguments and their
reprs: headers, properties, routing and serializer come from the task's attributes and the
settings. The first plain call of a task goes the ordinary way and keeps a copy of what it
built; later ones copy that and fill in the few per-call fields, which takes a third of the
CPU of building the message again (most of a ``delay()``'s own cost). The bytes are the same.

The template is used only while everything it was built from is unchanged, checked on each
call: the configuration (its generation counter, and ``task_queues``' entries, which may be
changed in place), the task's sending attributes, the app's routers and the route they give,
and no running task around the call (a parent gives root and parent ids and may lend its
priority). Calls that any of this does not cover take the ordinary path and do not learn:
routers other than ``task_routes`` mappings (a function may route by the arguments),
``expires`` on the task (it depends on the clock), task protocol 1.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caraway import serialization
from caraway.calling import TASK_EXEC_OPTIONS, PreparedCall, dispatch, prepare_call
from caraway.current import get_current_worker_task
from caraway.protocol import Message, repr_args
from caraway.routing import Destination, MapRouter, lookup
from caraway.utils.ids import new_id

if TYPE_CHECKING:
    from caraway.config import Configuration
    from caraway.result import AsyncResult
    from caraway.task import Task

#: The task attributes a plain call's message is built from.
_SENDING_ATTRIBUTES = operator.attrgetter(
    "name", *TASK_EXEC_OPTIONS, "time_limit", "soft_time_limit", "expires", "ignore_result"
)


@dataclass(frozen=True, slots=True)
class Template:
    """What a task's plain calls share, and what it was built from."""

    conf: Configuration
    generation: int
    queues: tuple[Any, ...]
    attributes: tuple[Any, ...]
    routers: list[Any]
    route: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]
    delivery_info: dict[str, Any]
    timelimit: tuple[Any, Any]
    serializer: str
    compression: str | None
    destination: Destination
    priority: int
    options: dict[str, Any]
    ignore_result: bool | None


def send_plain(
    task: Task[Any, Any], args: Iterable[Any] | None, kwargs: dict[str, Any] | None
) -> AsyncResult[Any]:
    """``send_task_message`` for a call with no option: from the task's template when it
    still holds, else the ordinary way (learning the template when the call allows it)."""
    app = task.app
    conf = app.conf
    args = args if isinstance(args, list | tuple) else tuple(args or ())
    kwargs = dict(kwargs or {})
    template: Template | None = task._send_template
    if (
        template is None
        or template.generation != conf.generation
        or template.conf is not conf
        or template.attributes != _SENDING_ATTRIBUTES(task)
        or template.routers is not app.routers
        or template.queues != tuple(conf.task_queues or ())
        or get_current_worker_task() is not None
        or (template.routers and template.route != _route(template, task, args, kwargs))
    ):
        return _send_and_learn(task, args, kwargs)
    task_id = new_id()
    headers = template.headers.copy()
    headers["id"] = headers["root_id"] = task_id
    headers["timelimit"] = list(template.timelimit)
    headers["argsrepr"] = repr_args(args)
    headers["kwargsrepr"] = repr_args(kwargs)
    headers["stamps"] = {}
    body = (args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    content_type, encoding, payload = serialization.dumps(body, template.serializer)
    if template.compression:
        payload, _ = serialization.compress(payload, template.compression)
    properties = template.properties.copy()
    properties["correlation_id"] = task_id
    properties["reply_to"] = app.thread_oid
    properties["delivery_info"] = template.delivery_info.copy()
    message = Message(headers, properties, payload, content_type, encoding)
    call = PreparedCall(
        task.name or "", task, task_id, message, body, template.destination, template.priority,
        None, template.options, template.ignore_result, None, template.route,
    )  # fmt: skip
    return dispatch(app, call)


def _route(template: Template, task: Task[Any, Any], args: Any, kwargs: Any) -> dict[str, Any]:
    """The route the routers give now: a ``task_routes`` entry may have been changed."""
    return lookup(template.routers, task.name or "", args, kwargs, template.options, task)


def _send_and_learn(
    task: Task[Any, Any], args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]
) -> AsyncResult[Any]:
    app = task.app
    conf = app.conf
    # Read before the message is built: a change meanwhile leaves a template that is
    # never used, rather than one that is used when it no longer holds.
    generation, queues, attributes = (
        conf.generation, tuple(conf.task_queues or ()), _SENDING_ATTRIBUTES(task),
    )  # fmt: skip
    routers = app.routers
    call = prepare_call(app, task.name or "", args, kwargs, task=task)
    if _learnable(call, routers, conf.task_protocol):
        # Copied before the publish: a before_task_publish receiver may change its headers.
        headers = dict(call.message.headers)
        properties = dict(call.message.properties)
        task._send_template = Template(
            conf, generation, queues, attributes, routers, call.route, headers, properties,
            dict(properties["delivery_info"]), tuple(headers["timelimit"]),
            call.options.get("serializer") or conf.task_serializer,
            call.options.get("compression") or conf.task_compression,
            call.destination, call.priority, call.options, call.ignore_result,
        )  # fmt: skip
    return dispatch(app, call)


def _learnable(call: PreparedCall, routers: list[Any], protocol: int) -> bool:
    """Whether the message of ``call`` holds for every plain call with the same inputs."""
    headers = call.message.headers
    return (
        protocol == 2
        and call.parent_request is None
        and call.deliver_at is None
        and headers.get("expires") is None
        and headers.get("root_id") == call.task_id
        and headers.get("parent_id") is None
        and "expiration" not in call.message.properties
        and all(type(router) is MapRouter for router in routers)
    )
