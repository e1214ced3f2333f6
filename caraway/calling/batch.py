"""Many calls of the same task in one batch: the first is sent the ordinary way, and the
rest are derived from its message, filling in only what differs per call.

A plain signature's message depends on the call only through its id, its arguments and
their reprs; routing, options, headers and properties come from the task and the settings,
the same for every call of that *shape* (task and call options). Building those once per
shape instead of once per call is what lets ``send_batch`` publish tens of thousands of
messages a second. Anything that depends on the clock or on a parent task (countdown, eta,
expires, links, a send from inside a task) is not a shape: it takes the ordinary path, and
so does every call of an app with a router function, which may route by the arguments.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from caraway import serialization
from caraway.canvas import Signature
from caraway.current import get_current_worker_task
from caraway.engines.base.broker import Outgoing
from caraway.protocol import Message, repr_args
from caraway.routing import MapRouter

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.task import Task

#: Call options that do not depend on the call, so calls that share them share a message
#: (a group's members share its id and reply queue; a chord's header, its body).
STATIC_OPTIONS = frozenset(
    {"queue", "routing_key", "exchange", "priority", "serializer", "compression",
     "ignore_result", "time_limit", "soft_time_limit", "group_id", "reply_to", "chord",
     "root_id", "parent_id"}
)  # fmt: skip
#: Call options that differ per call and are filled into the derived message.
PER_CALL_OPTIONS = frozenset({"task_id", "group_index"})

Shape = tuple[Hashable, ...]


class Shapes:
    """The shapes seen in one batch, each with the first message sent in that shape."""

    def __init__(self, app: Caraway) -> None:
        # Eager calls send nothing; inside a task, root and parent ids come from the parent;
        # a template is a protocol-2 message; a router function may route by the arguments.
        conf = app.conf
        self.enabled = (
            not conf.task_always_eager
            and conf.task_protocol == 2
            and get_current_worker_task() is None
            and all(isinstance(router, MapRouter) for router in app.routers)
        )
        self.templates: dict[Shape, tuple[Outgoing, dict[str, Any]]] = {}

    def shape_of(self, sig: Any) -> Shape | None:
        """The key of calls whose messages differ only by id and arguments; None for others."""
        if not self.enabled or type(sig) is not Signature or sig.get("subtask_type"):
            return None
        task = sig.type
        if task is None or task.expires is not None:
            return None
        options = sig.get("options")
        static: tuple[Any, ...] = ()
        if options:
            if any(k not in STATIC_OPTIONS and k not in PER_CALL_OPTIONS for k in options):
                return None
            static = tuple(
                sorted((k, _key(v)) for k, v in options.items() if k not in PER_CALL_OPTIONS)
            )
            try:
                hash(static)
            except TypeError:
                return None
        return (sig["task"], id(task), static)


def _key(value: Any) -> Any:
    """A dict or list option (a chord's body) is the same for calls that hold the same
    object; the signatures keep it alive for the whole batch."""
    return ("same object", id(value)) if isinstance(value, dict | list) else value


def derive(template: Outgoing, body: tuple[Any, Any, Any], task_id: str, args: tuple[Any, ...],
           kwargs: dict[str, Any], group_index: int | None = None,
           ) -> tuple[Message, tuple[Any, Any, Any]]:  # fmt: skip
    """The message ``template`` would have been for this call: new id, args and body."""
    old = template.message
    headers = dict(old.headers)
    if headers.get("root_id") == headers["id"]:
        headers["root_id"] = task_id
    headers["id"] = task_id
    headers["group_index"] = group_index
    headers["argsrepr"] = repr_args(args)
    headers["kwargsrepr"] = repr_args(kwargs)
    properties = dict(old.properties)
    properties["correlation_id"] = task_id
    new_body = (args, kwargs, body[2])
    content_type, encoding, payload = serialization.dumps(new_body, old.content_type)
    compression = headers.get("compression")
    if compression:
        payload, _ = serialization.compress(payload, compression)
    return Message(headers, properties, payload, content_type, encoding), new_body


def check_arguments(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """What ``apply_async`` checks before a send, when the task asks for it (``typing``)."""
    if task.app.strict_typing if task.typing is None else task.typing:
        task._check_arguments(args, kwargs)
