"""Signals with Celery's names and arguments.

A receiver is any callable taking ``sender`` and keyword arguments (always accept
``**kwargs``: new arguments may be added). Receivers run in the order they connected; an
exception in one is logged and does not stop the others or the worker. ``async def``
receivers of the task signals are awaited by the task's run (see ``collect_awaitables``).
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, overload

logger = logging.getLogger("caraway.signals")

Receiver = Callable[..., Any]
#: Where ``send`` puts what ``async def`` receivers return, while a task runs.
_awaitables: ContextVar[list[Awaitable[Any]] | None] = ContextVar(
    "caraway_signal_awaitables", default=None
)


def collect_awaitables(into: list[Awaitable[Any]] | None) -> Any:
    """Collect async receivers' coroutines ``into`` a list (None: stop); returns a token."""
    return _awaitables.set(into)


def stop_collecting(token: Any) -> None:
    _awaitables.reset(token)


class Signal:
    """A named hook that receivers connect to and senders send on."""

    def __init__(self, name: str, providing_args: frozenset[str] | None = None) -> None:
        self.name = name
        self.providing_args = providing_args or frozenset()
        self._receivers: list[tuple[Any, Any, Any]] = []
        self._lock = threading.Lock()

    @overload
    def connect(
        self,
        receiver: Receiver,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Any = None,
    ) -> Receiver: ...

    @overload
    def connect(
        self,
        receiver: None = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Any = None,
    ) -> Callable[[Receiver], Receiver]: ...

    def connect(
        self,
        receiver: Receiver | None = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Any = None,
    ) -> Any:
        """Connect ``receiver``; usable as ``@signal.connect`` or ``@signal.connect(sender=...)``.

        Receivers are held strongly by default (``weak=False``): a decorated inner function
        would otherwise vanish as soon as its defining scope ends.
        """
        if receiver is None:

            def decorate(fun: Receiver) -> Receiver:
                self.connect(fun, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
                return fun

            return decorate
        key = (dispatch_uid or _receiver_id(receiver), _sender_key(sender))
        ref: Any = _weak(receiver) if weak else receiver
        with self._lock:
            if not any(existing == key for existing, _, _ in self._receivers):
                self._receivers.append((key, ref, sender))
        return receiver

    def disconnect(
        self, receiver: Receiver | None = None, sender: Any = None, dispatch_uid: Any = None
    ) -> bool:
        """Disconnect a receiver; True when one was connected."""
        if receiver is None and dispatch_uid is None:
            raise TypeError("disconnect() needs the receiver or its dispatch_uid")
        key = (dispatch_uid or _receiver_id(receiver), _sender_key(sender))
        with self._lock:
            before = len(self._receivers)
            self._receivers = [item for item in self._receivers if item[0] != key]
            return len(self._receivers) != before

    def has_receivers(self) -> bool:
        """Whether any receiver is connected: a hot path skips ``send``'s arguments if not."""
        return bool(self._receivers)

    @property
    def receivers(self) -> list[Receiver]:
        live = []
        for _, ref, _ in self._receivers:
            fun = ref() if isinstance(ref, _WEAK) else ref
            if fun is not None:
                live.append(fun)
        return live

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver for ``sender``; errors are logged, never raised."""
        if not self._receivers:
            return []
        responses: list[tuple[Receiver, Any]] = []
        for _, ref, wanted in list(self._receivers):
            fun = ref() if isinstance(ref, _WEAK) else ref
            if fun is None or (wanted is not None and not _sender_matches(wanted, sender)):
                continue
            try:
                response = fun(signal=self, sender=sender, **named)
                if response is not None and inspect.isawaitable(response):
                    pending = _awaitables.get()
                    if pending is not None:
                        pending.append(response)
                responses.append((fun, response))
            except Exception as exc:
                logger.exception("Signal handler %r raised: %r", fun, exc)
                responses.append((fun, exc))
        return responses

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


#: References held weakly (the union, built once: ``send`` runs several times per task).
_WEAK = (weakref.ReferenceType, weakref.WeakMethod)


def _weak(receiver: Receiver) -> Any:
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return weakref.WeakMethod(receiver)
    return weakref.ref(receiver)


def _receiver_id(receiver: Any) -> Any:
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


def _sender_key(sender: Any) -> Any:
    return None if sender is None else (sender if isinstance(sender, str) else id(sender))


def _sender_matches(wanted: Any, sender: Any) -> bool:
    """A task sender matches by object or by its name, as Celery allows either."""
    if wanted is sender:
        return True
    name = getattr(sender, "name", sender)
    return isinstance(wanted, str) and wanted == name


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
worker_init = Signal("worker_init")
worker_before_create_process = Signal("worker_before_create_process")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down")
worker_shutdown = Signal("worker_shutdown")
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
import_modules = Signal("import_modules")
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
heartbeat_sent = Signal("heartbeat_sent")

__all__ = [
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "collect_awaitables",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "stop_collecting",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_before_create_process",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]
