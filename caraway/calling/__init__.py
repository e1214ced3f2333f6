"""Sending a task: options, routing, the message (protocol 2, or 1 by ``task_protocol``),
and the publish with retries."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.calling import batch, legacy
from caraway.connection import Connection
from caraway.current import get_current_worker_task
from caraway.engines.base.broker import Outgoing
from caraway.engines.registry import backend_capabilities
from caraway.exceptions import ImproperlyConfigured, OperationalError
from caraway.protocol import Message, build_task_message
from caraway.routing import Destination, lookup, queue_table
from caraway.tracing import sending, tracer_for
from caraway.utils.ids import new_id
from caraway.utils.time import absolute_time

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.canvas import Signature
    from caraway.result import AsyncResult
    from caraway.task import Task

#: Task attributes that act as default call options (Celery's ``_get_exec_options``).
TASK_EXEC_OPTIONS = ("queue", "routing_key", "exchange", "priority", "serializer", "compression")
#: AMQP basic properties a caller may set (``apply_async(app_id=...)``); they travel as
#: message properties and the task reads them in ``self.request.properties`` (Celery).
CALLER_PROPERTIES = ("app_id", "user_id", "type", "message_id", "timestamp", "cluster_id")
DEFAULT_RETRY_POLICY = {
    "max_retries": 3,
    "interval_start": 0.0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}


def _signature_dicts(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    return [dict(item) for item in items] or None


def _stamps(options: dict[str, Any]) -> dict[str, Any] | None:
    """Celery's form: ``stamped_headers=["k"]`` names options that hold the stamp values."""
    names = options.get("stamped_headers") or ()
    return {name: options[name] for name in names if name in options} or None


def send_task_message(
    app: Caraway,
    name: str,
    args: Iterable[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    task: Task[Any, Any] | None = None,
    task_id: str | None = None,
    link: Any = None,
    link_error: Any = None,
    shadow: str | None = None,
    **options: Any,
) -> AsyncResult[Any]:
    """Build and publish the message for one task call; returns its ``AsyncResult``."""
    call = prepare_call(
        app, name, args, kwargs, task=task, task_id=task_id, link=link,
        link_error=link_error, shadow=shadow, **options,
    )  # fmt: skip
    return dispatch(app, call)


@dataclass(slots=True)
class PreparedCall:
    """One task call's message and everything its publish needs, before it is sent."""

    name: str
    task: Task[Any, Any] | None
    task_id: str
    message: Message
    body: Any  # what the publish signals see: the v1 object, or v2's (args, kwargs, embed)
    destination: Destination
    priority: int
    deliver_at: float | None
    options: dict[str, Any]
    ignore_result: bool | None
    parent_request: Any  # the running task's request, when sent from inside a task
    route: dict[str, Any]


def prepare_call(
    app: Caraway,
    name: str,
    args: Iterable[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    task: Task[Any, Any] | None = None,
    task_id: str | None = None,
    link: Any = None,
    link_error: Any = None,
    shadow: str | None = None,
    **options: Any,
) -> PreparedCall:
    """The message of one task call, with its routing, options and result settings."""
    conf = app.conf
    # A tuple when none were given, as Celery sends it: argsrepr is "()" (docs/celery-wire.md §1.3).
    args = args if isinstance(args, list | tuple) else tuple(args or ())
    kwargs = dict(kwargs or {})
    task_id = task_id or new_id()
    if task is not None:
        defaults = {key: getattr(task, key) for key in TASK_EXEC_OPTIONS}
        options = {**{k: v for k, v in defaults.items() if v is not None}, **options}
    options = {k: v for k, v in options.items() if v is not None}
    _check_time_limits(
        options.get("time_limit", getattr(task, "time_limit", None)),
        options.get("soft_time_limit", getattr(task, "soft_time_limit", None)),
    )
    route = lookup(app.routers, name, args, kwargs, options, task)
    merged = {**route, **options}
    destination = queue_table(conf).destination(merged)
    now = time.time()
    eta = absolute_time(options.get("eta"), now)
    if eta is None and options.get("countdown") is not None:
        eta = absolute_time(float(options["countdown"]), now)
    expires = options.get("expires")
    if expires is None and task is not None and task.expires is not None:
        expires = task.expires
    expires_at = absolute_time(expires, now)
    parent = get_current_worker_task()
    parent_request = parent.request if parent is not None else None
    priority = options.get("priority")
    if priority is None and parent_request is not None and conf.task_inherit_parent_priority:
        priority = (parent_request.delivery_info or {}).get("priority")
    if priority is None:
        priority = merged.get("priority", conf.task_default_priority)
    ignore_result = options.get("ignore_result")
    if ignore_result is None and task is not None:
        ignore_result = task.ignore_result
    if ignore_result is None:
        ignore_result = conf.task_ignore_result if task is not None else None
    serializer = options.get("serializer") or conf.task_serializer
    body: Any
    if conf.task_protocol != 2:
        message, body = legacy.build(
            app, name, task_id, args, kwargs, options, callbacks=_signature_dicts(link),
            errbacks=_signature_dicts(link_error), eta=eta, expires=expires_at,
            priority=priority, serializer=serializer,
            now=datetime.fromtimestamp(now, timezone.utc),
        )  # fmt: skip
    else:
        message = build_task_message(
            name,
            task_id,
            args,
            kwargs,
            eta=eta,
            expires=expires_at,
            group=options.get("group_id"),
            group_index=options.get("group_index"),
            retries=int(options.get("retries") or 0),
            time_limit=options.get("time_limit"),
            soft_time_limit=options.get("soft_time_limit"),
            root_id=options.get("root_id") or (parent_request.root_id if parent_request else None),
            parent_id=options.get("parent_id") or (parent_request.id if parent_request else None),
            shadow=shadow,
            ignore_result=ignore_result,
            callbacks=_signature_dicts(link),
            errbacks=_signature_dicts(link_error),
            chain=options.get("chain"),
            chord=options.get("chord"),
            reply_to=options.get("reply_to") or app.thread_oid,
            priority=priority,
            serializer=serializer,
            compression=options.get("compression") or conf.task_compression,
            headers=options.get("headers"),
            stamped_headers=options.get("stamped_headers"),
            stamps=options.get("stamps") or _stamps(options),
            replaced_task_nesting=int(options.get("replaced_task_nesting") or 0),
            now=datetime.fromtimestamp(now, timezone.utc),
        )
        embed = {"callbacks": link, "errbacks": link_error, "chain": options.get("chain"),
                 "chord": options.get("chord")}  # fmt: skip
        body = (args, kwargs, embed)
    message.properties["delivery_info"] = {
        "exchange": destination.exchange, "routing_key": destination.routing_key,
    }  # fmt: skip
    message.properties["delivery_mode"] = delivery_mode(
        options.get("delivery_mode") or conf.task_default_delivery_mode
    )
    message.properties.update((k, options[k]) for k in CALLER_PROPERTIES if k in options)
    return PreparedCall(
        name, task, task_id, message, body, destination, priority or 0,
        eta.timestamp() if eta else None, options, ignore_result, parent_request, route,
    )  # fmt: skip


def dispatch(app: Caraway, call: PreparedCall) -> AsyncResult[Any]:
    """Publish a prepared call (or collect it into the batch being built); its result."""
    task_id, task, ignore_result, parent_request = (
        call.task_id, call.task, call.ignore_result, call.parent_request,
    )  # fmt: skip
    # Only a backend already in use: creating one here could fail a send that needs none.
    # Not from inside a task, where waiting on a result is refused anyway (as in Celery).
    backend = app._backend
    if backend is None and _needs_reply_queue(str(app.conf.result_backend or "")):
        backend = app.backend  # its reply queue must be declared before the first send
    if not ignore_result and backend is not None and parent_request is None and not _collecting():
        backend.on_task_call(task_id)
    publish(
        app, call.name, call.message, call.body, call.destination, call.priority,
        call.deliver_at, call.options,
    )  # fmt: skip
    if parent_request is not None:
        parent_request.children.append([[task_id, None], None])
    result: AsyncResult[Any] = (
        # The task's result class (AbortableTask's), as Celery.
        task.AsyncResult(task_id)
        if task is not None
        else app.AsyncResult(task_id, task_name=call.name)
    )
    result.ignored = bool(ignore_result)
    return result


def _check_time_limits(hard: Any, soft: Any) -> None:
    """A soft limit past the hard one would never fire: refused before sending (Celery)."""
    if hard is not None and soft is not None and float(soft) > float(hard):
        raise ValueError(
            f"soft_time_limit must be less than or equal to time_limit (got soft_time_limit="
            f"{soft}, time_limit={hard})"
        )


@lru_cache(maxsize=16)
def _needs_reply_queue(url: str) -> bool:
    """Whether results of ``url`` go to a reply queue the sender declares (``rpc://``), so
    the backend is made before sending. An engine that cannot be loaded says nothing here:
    its error comes when the backend is used, as with any backend made on first read."""
    if not url:
        return False
    try:
        return backend_capabilities(url).needs_reply_queue
    except (ImproperlyConfigured, ImportError):
        return False


def publish(
    app: Caraway,
    name: str,
    message: Message,
    body: Any,
    destination: Destination,
    priority: int,
    deliver_at: float | None,
    options: dict[str, Any],
) -> None:
    """Publish with the signals around it, retrying connection errors per ``retry_policy``.

    Inside ``send_batch`` the message is collected instead, and published with the batch.
    """
    tracer = tracer_for(app)
    if tracer is None:
        _publish(app, name, message, body, destination, priority, deliver_at, options)
        return
    task_id = str(message.task_id)
    with sending(tracer, name, task_id, destination.queue, message.headers):
        _publish(app, name, message, body, destination, priority, deliver_at, options)


def _publish(
    app: Caraway,
    name: str,
    message: Message,
    body: Any,
    destination: Destination,
    priority: int,
    deliver_at: float | None,
    options: dict[str, Any],
) -> None:
    queue, exchange, routing_key = destination.queue, destination.exchange, destination.routing_key
    declaration = destination.declaration
    if exchange and not app.broker.capabilities.exchanges:
        if exchange != queue or destination.exchange_type != "direct":
            raise ImproperlyConfigured(
                f"{name} is routed to the {destination.exchange_type} exchange {exchange!r}, but"
                f" the broker {app.broker.describe()} routes by queue name only: route this task"
                " by queue name, or use a broker with exchanges (every built-in one has them)"
            )
        # The queue's own direct exchange (Celery's plain layout, as a retry's
        # delivery_info names it) is routing by the queue's name, which every broker does.
        exchange = ""
    if signals.before_task_publish.has_receivers():
        signals.before_task_publish.send(
            sender=name, body=body, exchange=exchange, routing_key=routing_key,
            headers=message.headers, properties=message.properties,
            declare=[] if declaration is None else [declaration],
            retry_policy=options.get("retry_policy"),
        )  # fmt: skip
    outgoing = Outgoing(
        message,
        queue,
        priority,
        deliver_at,
        exchange,
        routing_key,
        destination.exchange_type,
        # Straight to a queue of the plain layout: the engine declares it by its name.
        None if not exchange and declaration is not None and declaration.is_plain else declaration,
    )
    after = {"sender": name, "body": body, "exchange": exchange, "routing_key": routing_key,
             "headers": message.headers}  # fmt: skip
    collecting = _batch.get()
    if collecting is not None:
        collecting.append((outgoing, after))
        return
    _send(app, [outgoing], options)
    if signals.after_task_publish.has_receivers():
        signals.after_task_publish.send(**after)
    if app.conf.task_send_sent_event:
        # Lazy, an allow-listed upward import: the task-sent event goes out with the message.
        from caraway.events.sent import send_sent_event

        send_sent_event(app, message, body, queue)


def _send(app: Caraway, batch: list[Outgoing], options: dict[str, Any]) -> None:
    """Publish, or with ``connection=`` (the application's database connection) write the
    batch in that connection's transaction: not retried, its errors are the caller's. The
    handle of ``app.connection()`` (Celery's ``connection=`` spelling) changes nothing."""
    within = options.get("connection")
    if within is None or isinstance(within, Connection):
        _publish_retrying(app, batch, options)
    else:
        app.broker.publish_in(within, batch)


def _publish_retrying(app: Caraway, batch: list[Outgoing], options: dict[str, Any]) -> None:
    """Publish; on a refusal, try again after each pause of the retry policy (read only
    then: most publishes succeed at once, and the policy costs a few µs to assemble)."""
    try:
        app.broker.publish(batch)
        return
    except OperationalError:
        pauses = publish_pauses(app, options)
        if not pauses:
            raise
    for pause in pauses[:-1]:
        time.sleep(pause)
        try:
            app.broker.publish(batch)
            return
        except OperationalError:
            pass
    time.sleep(pauses[-1])
    app.broker.publish(batch)


def publish_pauses(app: Caraway, options: Mapping[str, Any]) -> list[float]:
    """The pauses between tries of a publish the broker refused, from Celery's retry policy
    (``task_publish_retry_policy`` and the call's ``retry_policy``); none with retry off."""
    if not options.get("retry", app.conf.task_publish_retry):
        return []
    policy = {**DEFAULT_RETRY_POLICY, **(app.conf.task_publish_retry_policy or {})}
    policy.update(options.get("retry_policy") or {})
    pauses, pause = [], float(policy["interval_start"])
    for _ in range(int(policy["max_retries"] or 0)):
        pauses.append(pause)
        pause = min(pause + float(policy["interval_step"]), float(policy["interval_max"]))
    return pauses


#: Messages collected by ``send_batch`` in this context: (outgoing, after_task_publish args).
_DELIVERY_MODES = {"transient": 1, "persistent": 2, 1: 1, 2: 2}


def delivery_mode(value: str | int) -> int:
    """``task_default_delivery_mode`` or a call's ``delivery_mode``: 1 (transient: lost if
    RabbitMQ restarts, cheaper to publish) or 2 (persistent), by name or number."""
    key = value.lower() if isinstance(value, str) else value
    if key not in _DELIVERY_MODES:
        raise ImproperlyConfigured(
            f"delivery mode {value!r} is not one of 'persistent' (2) or 'transient' (1)"
        )
    return _DELIVERY_MODES[key]


_batch: ContextVar[list[tuple[Outgoing, dict[str, Any]]] | None] = ContextVar(
    "caraway_batch", default=None
)


def _collecting() -> bool:
    return _batch.get() is not None


@contextmanager
def collecting() -> Iterator[list[tuple[Outgoing, dict[str, Any]]]]:
    """Collect the messages sent in this block instead of publishing them.

    Each item is ``(outgoing, after_task_publish arguments)``; the caller publishes them (beat
    does, together with the record of the run) and then sends ``after_task_publish``.
    """
    collected: list[tuple[Outgoing, dict[str, Any]]] = []
    token = _batch.set(collected)
    try:
        yield collected
    finally:
        _batch.reset(token)


#: Messages per broker call: one Redis pipeline or one run of AMQP publisher confirms.
BATCH_CHUNK = 1000


def send_batch(app: Caraway, signatures: Iterable[Signature]) -> list[AsyncResult[Any]]:
    """Send many signatures with a few broker round trips; their results, in order.

    Each signature is sent as ``sig.apply_async()`` would send it (routing, options,
    signals), but the messages go to the broker ``BATCH_CHUNK`` at a time, each chunk
    stored durably before the next starts. A failure leaves the chunks before it sent.
    """
    with _collections_paused(), collecting() as collected:
        shapes = batch.Shapes(app)
        results = [_send_in_batch(app, sig, collected, shapes) for sig in signatures]
        for start in range(0, len(collected), BATCH_CHUNK):
            chunk = collected[start : start + BATCH_CHUNK]
            _publish_retrying(app, [outgoing for outgoing, _ in chunk], {})
            if signals.after_task_publish.has_receivers():
                for _, after in chunk:
                    signals.after_task_publish.send(**after)
    return results


@contextmanager
def _collections_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is built and sent: its objects all live
    until it is sent, so each collection would only walk them again (a fifth of the CPU
    of a 20,000-message batch). Reference counting still frees everything else."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _send_in_batch(
    app: Caraway,
    sig: Signature,
    collected: list[tuple[Outgoing, dict[str, Any]]],
    shapes: batch.Shapes,
) -> AsyncResult[Any]:
    """``sig.apply_async()``, or its message derived from an earlier one of the same shape."""
    shape = shapes.shape_of(sig)
    template = shapes.templates.get(shape) if shape is not None else None
    if template is None:
        result: AsyncResult[Any] = sig.apply_async()
        if shape is not None and collected and collected[-1][0].message.task_id == result.id:
            shapes.templates[shape] = collected[-1]
        return result
    outgoing, after = template
    task = sig.type
    assert task is not None  # a shape has one
    args, kwargs = tuple(sig.get("args") or ()), dict(sig.get("kwargs") or {})
    batch.check_arguments(task, args, kwargs)
    options = sig.get("options") or {}
    task_id = str(options.get("task_id") or new_id())
    message, body = batch.derive(
        outgoing, after["body"], task_id, args, kwargs, options.get("group_index")
    )
    destination = Destination(
        outgoing.queue,
        outgoing.exchange,
        outgoing.routing_key,
        outgoing.exchange_type,
        outgoing.declaration,
    )
    publish(app, sig["task"], message, body, destination, outgoing.priority, None, options)
    return app.AsyncResult(task_id, task_name=sig["task"])
