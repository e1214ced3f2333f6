"""Every error caraway raises, under one root, with Celery's names.

Errors from third-party clients are translated into these at the engine boundary, with the
original chained as ``__cause__``. On the wire, exceptions defined here are written with
``exc_module = "celery.exceptions"`` so Celery clients rebuild them by name (and the reverse).
"""

from __future__ import annotations

import builtins
import numbers
from datetime import datetime
from typing import Any

WIRE_MODULE = "celery.exceptions"


class CarawayError(Exception):
    """Root of every exception caraway raises on purpose."""


CeleryError = CarawayError


class CarawayWarning(UserWarning):
    """Root of every warning caraway emits."""


CeleryWarning = CarawayWarning


class ImproperlyConfigured(CarawayError, ValueError):
    """A setting, URL or option is wrong; the message says what to change."""


class ConfigurationWarning(CarawayWarning):
    """A setting is unknown or deprecated but caraway can go on."""


class NotConfigured(CarawayWarning):
    """Caraway is used without a configuration where one was expected."""


class MissingExtra(ImproperlyConfigured):
    """An optional engine is used without its extra installed."""


class OperationalError(CarawayError):
    """A broker or backend failed to do what was asked (connection lost, server error)."""


class Unreachable(OperationalError):
    """The server could not be reached (refused, reset, timed out): a later try may work.

    The worker retries these under ``broker_connection_*``; any other ``OperationalError``
    (a refused command, a missing queue) is not cured by waiting.
    """


class SerializationError(CarawayError):
    """A value could not be serialized or deserialized."""


class EncodeError(SerializationError):
    """A value cannot be encoded with the chosen serializer."""


class DecodeError(SerializationError):
    """Bytes cannot be decoded with the declared content type."""


class SecurityError(DecodeError):
    """A signed message failed its check: bad or missing signature, unknown or expired
    certificate, or a key that cannot sign (message signing, ``caraway.security``)."""


class BodyTooLarge(DecodeError):
    """A compressed body expands past ``worker_max_decompressed_size`` (a zip bomb, or a
    payload larger than this deployment accepts)."""

    def __init__(self, limit: int, mime: str) -> None:
        super().__init__(
            f"body larger than {limit} bytes after decompression ({mime}); raise "
            "worker_max_decompressed_size to accept it"
        )
        self.limit, self.mime = limit, mime

    def __reduce__(self) -> tuple[type[BodyTooLarge], tuple[int, str]]:
        return type(self), (self.limit, self.mime)  # pickles although args is the message


class ContentDisallowed(SerializationError):
    """A message uses a content type that is not in ``accept_content``."""


class QueueNotFound(CarawayError, KeyError):
    """A task was routed to a queue that is not defined and may not be created."""


class NotRegistered(CarawayError, KeyError):
    """The task name is not registered with the app.

    ``hint`` (e.g. " Did you mean 'proj.add'?") shows in ``str()`` only: ``args`` stay
    ``(name,)``, which is what goes on the wire.
    """

    def __init__(self, *args: Any, hint: str = "") -> None:
        super().__init__(*args)
        self.hint = hint

    def __str__(self) -> str:
        return super().__str__() + self.hint

    def __repr__(self) -> str:
        return f"NotRegistered({self.args[0]!r})" if self.args else "NotRegistered()"


class AlreadyRegistered(CarawayError):
    """A different task already uses that name."""


class TimeoutError(CarawayError, builtins.TimeoutError):
    """The operation did not finish within the time given."""


class TaskError(CarawayError):
    """Base of errors raised about a task's own execution."""


class IncompleteStream(TaskError):
    """The stream ended before the task's result arrived."""


class MaxRetriesExceededError(TaskError):
    """The task tried to retry more than ``max_retries`` times."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        super().__init__(*args)
        self.task_args = task_args
        self.task_kwargs = task_kwargs


class TaskRevokedError(TaskError):
    """The task was revoked (by id, by expiry or by termination) and did not run to completion."""


class InvalidTaskError(TaskError):
    """The message is not a task message that can be executed."""


class ChordError(TaskError):
    """A task in a chord header failed, so the body cannot run."""


class TaskPredicate(TaskError):
    """Raised by a task to steer its own outcome (retry, ignore, reject), not to fail."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry`` to tell the worker the task is being retried."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | str | None = None,
        when: numbers.Real | datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc: BaseException | str | None = exc
        self.excs = str(exc) if isinstance(exc, str) else (repr(exc) if exc else None)
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(self, exc, when, **kwargs)

    def humanize(self) -> str:
        if isinstance(self.when, numbers.Number):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.excs:
            return f"Retry {self.humanize()}: {self.excs}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.message, self.exc, self.when)


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """Raised inside a task to make the worker store nothing and ack the message."""


class Reject(TaskPredicate):
    """Raised inside a task to reject its message, optionally requeueing it."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class WorkerLostError(CarawayError):
    """The process or thread running the task went away before it finished."""


class Terminated(CarawayError):
    """The task was terminated on request."""


class SoftTimeLimitExceeded(CarawayError):
    """The task ran past its soft time limit; it may catch this to clean up."""

    def __str__(self) -> str:
        return "SoftTimeLimitExceeded" + (f"({self.args[0]!r})" if self.args else "()")


class TimeLimitExceeded(CarawayError):
    """The task ran past its hard time limit and was stopped."""

    def __str__(self) -> str:
        return "TimeLimitExceeded" + (f"({self.args[0]!r})" if self.args else "()")


class WorkerShutdown(SystemExit):
    """Raised to make the worker shut down warmly."""


class WorkerTerminate(SystemExit):
    """Raised to make the worker shut down at once."""


__all__ = [
    "WIRE_MODULE",
    "AlreadyRegistered",
    "BodyTooLarge",
    "CarawayError",
    "CarawayWarning",
    "CeleryError",
    "CeleryWarning",
    "ChordError",
    "ConfigurationWarning",
    "ContentDisallowed",
    "DecodeError",
    "EncodeError",
    "Ignore",
    "ImproperlyConfigured",
    "IncompleteStream",
    "InvalidTaskError",
    "MaxRetriesExceededError",
    "MissingExtra",
    "NotConfigured",
    "NotRegistered",
    "OperationalError",
    "QueueNotFound",
    "Reject",
    "Retry",
    "RetryTaskError",
    "SecurityError",
    "SerializationError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskPredicate",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "Unreachable",
    "WorkerLostError",
    "WorkerShutdown",
    "WorkerTerminate",
]
