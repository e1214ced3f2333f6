"""OpenTelemetry traces: a PRODUCER span around each send, a CONSUMER span around each run.

The two are linked through the W3C ``traceparent`` (and ``tracestate``) header, written into
the message headers by the configured propagator; Celery ignores headers it does not know, so
a traced message still runs on a Celery worker. A task sent while another runs (a chain's next
step, a retry, a subtask) is sent inside that run's span, so it becomes its child.

Off unless ``opentelemetry_tracing`` is set. Whether an app traces is decided once, at its
first send or run (:func:`tracer_for`): untraced apps pay one dictionary lookup per task.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary

from caraway import states
from caraway.exceptions import ImproperlyConfigured
from caraway.utils.pid import after_fork_in_child
from caraway.version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from caraway.app import Caraway
    from caraway.execution import Outcome
    from caraway.request import Context

logger = logging.getLogger("caraway.tracing")

#: What the attributes call this messaging system (OpenTelemetry's ``messaging.system``).
SYSTEM = "caraway"

_tracers: WeakKeyDictionary[Caraway, Tracer | None] = WeakKeyDictionary()
_resolving = threading.Lock()

T = TypeVar("T")


def tracer_for(app: Caraway) -> Tracer | None:
    """The app's tracer, or None when it does not trace (decided at the first call)."""
    try:
        return _tracers[app]
    except KeyError:
        with _resolving:
            if app not in _tracers:
                _tracers[app] = _resolve(app)
            return _tracers[app]


def _forget_after_fork() -> None:
    """A forked child (a prefork pool's) decides for itself: its tracer provider may be set
    in ``worker_process_init``, after the parent decided."""
    global _resolving
    _tracers.clear()
    _resolving = threading.Lock()  # another thread may have held it at the fork


after_fork_in_child(_forget_after_fork)


def _resolve(app: Caraway) -> Tracer | None:
    if not app.conf.opentelemetry_tracing:
        return None
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ImproperlyConfigured(
            "opentelemetry_tracing is on but OpenTelemetry is not installed:"
            ' pip install "caraway[otel]"'
        ) from exc
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        logger.warning(
            "opentelemetry_tracing is on but no tracer provider is set: no spans from %s. Call "
            "opentelemetry.trace.set_tracer_provider() before its first task is sent or run.",
            app.main or "this app",
        )
        return None
    return trace.get_tracer("caraway", __version__)


@contextmanager
def sending(
    tracer: Tracer, name: str, task_id: str, queue: str, headers: dict[str, Any]
) -> Iterator[None]:
    """A PRODUCER span around one send; its context goes into ``headers``."""
    from opentelemetry import propagate, trace

    attributes: dict[str, str | int] = {
        "messaging.system": SYSTEM, "messaging.operation.type": "send",
        "messaging.destination.name": queue, "messaging.message.id": task_id,
        "caraway.task.name": name, "caraway.task.id": task_id,
        "caraway.task.retries": int(headers.get("retries") or 0),
    }  # fmt: skip
    with tracer.start_as_current_span(
        f"send {name}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        propagate.inject(headers)
        yield


def running(
    tracer: Tracer, request: Context, steps: Generator[T, Any, Outcome]
) -> Generator[T, Any, Outcome]:
    """Drive ``steps`` (one run, see ``caraway.execution``) inside a CONSUMER span whose
    parent is the sender's span from the message headers; the outcome sets its status."""
    from opentelemetry import propagate, trace

    queue = (request.delivery_info or {}).get("routing_key") or ""
    attributes: dict[str, str | int] = {
        "messaging.system": SYSTEM, "messaging.operation.type": "process",
        "messaging.destination.name": queue, "messaging.message.id": request.id or "",
        "caraway.task.name": request.task or "", "caraway.task.id": request.id or "",
        "caraway.task.retries": int(request.retries or 0),
    }  # fmt: skip
    with tracer.start_as_current_span(
        f"run {request.task}", context=propagate.extract(request.headers or {}),
        kind=trace.SpanKind.CONSUMER, attributes=attributes,
    ) as span:  # fmt: skip
        outcome = yield from steps
        _record(span, outcome.state, outcome.retval)
        return outcome


def _record(span: Span, state: str, retval: Any) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("caraway.task.state", state)
    if state == states.FAILURE:
        if isinstance(retval, BaseException):
            span.record_exception(retval)
        span.set_status(Status(StatusCode.ERROR, f"{type(retval).__name__}: {retval}"))
