"""Logging with Celery's formats: ``get_task_logger`` and a formatter that knows the task."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

DEFAULT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
DEFAULT_TASK_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)

task_logger = logging.getLogger("caraway.task")
worker_logger = logging.getLogger("caraway.worker")


#: Level names to numbers and numbers to names, both ways as Celery's ``LOG_LEVELS`` maps them.
LOG_LEVELS: dict[str | int, str | int] = {
    **{name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")},
    "WARN": logging.WARNING, "FATAL": logging.CRITICAL,
    **{getattr(logging, name): name for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")},
}  # fmt: skip


def mlevel(level: int | str) -> int:
    """A level as a number: ``"info"``, ``"INFO"``, ``"20"`` or ``20`` → 20 (Celery's helper)."""
    if isinstance(level, int) or level.isdigit():
        return int(level)
    number = LOG_LEVELS.get(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}: one of {', '.join(_LEVEL_NAMES)}")
    return number


_LEVEL_NAMES = [name for name in LOG_LEVELS if isinstance(name, str)]


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """A logger whose records carry the running task's name and id."""
    if name in {"caraway.task", "celery.task"}:
        raise RuntimeError(f"logger name {name!r} is reserved; use __name__")
    logger = logging.getLogger(name)
    logger.parent = task_logger
    return logger


class TaskFormatter(logging.Formatter):
    """Fills ``task_name``/``task_id`` from the current task, ``???`` outside one.

    ``current_task`` is passed in (the worker gives ``caraway.current.get_current_task``), as
    this module sits below the app and must not import it.
    """

    def __init__(self, fmt: str, current_task: Callable[[], Any]) -> None:
        super().__init__(fmt)
        self._current_task = current_task

    def format(self, record: logging.LogRecord) -> str:
        task = self._current_task()
        if task is not None and task.request.id:
            record.__dict__.setdefault("task_id", task.request.id)
            record.__dict__.setdefault("task_name", task.name)
        else:
            record.__dict__.setdefault("task_id", "???")
            record.__dict__.setdefault("task_name", "???")
        return super().format(record)


def level_number(level: int | str) -> int:
    """``'info'``/``'INFO'``/``20`` → 20; an unknown name is an error that lists the choices."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(
            f"unknown log level {level!r}: choose DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return number


def setup_logging(
    loglevel: int | str = logging.WARNING,
    logfile: str | None = None,
    fmt: str = DEFAULT_FORMAT,
    task_fmt: str = DEFAULT_TASK_FORMAT,
    colorize: bool | None = None,
    current_task: Callable[[], Any] = lambda: None,
    hijack: bool = False,
) -> None:
    """Configure the root logger and the task logger the way a Celery worker does.

    ``current_task`` tells the task logger's records which task is running. ``hijack``
    (``worker_hijack_root_logger``) removes every handler the root logger had, as Celery
    does; otherwise only a handler caraway added earlier is replaced.
    """
    level = level_number(loglevel)
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if hijack or getattr(existing, "_caraway", False):
            root.removeHandler(existing)
    handler._caraway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)

    task_handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    task_handler.setFormatter(TaskFormatter(task_fmt, current_task))
    for existing in list(task_logger.handlers):
        task_logger.removeHandler(existing)
    task_logger.addHandler(task_handler)
    task_logger.setLevel(level)
    task_logger.propagate = False


class LoggingProxy(io.TextIOBase):
    """A text stream whose lines become log records (``print()`` in a task, as in Celery).

    Partial writes are buffered until a newline, so ``print("a", "b")`` is one record. A
    write made while logging this stream's own line (a handler that writes to the stream it
    replaced) goes to ``fallback`` instead of looping.
    """

    def __init__(self, logger: logging.Logger, level: int, fallback: TextIO) -> None:
        super().__init__()
        self.logger = logger
        self.level = level
        self.fallback = fallback
        self._local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        local = self._local
        if getattr(local, "busy", False):
            return self.fallback.write(text)
        pending: str = getattr(local, "pending", "") + text
        *lines, local.pending = pending.split("\n")
        local.busy = True
        try:
            for line in lines:
                if line.strip():
                    self.logger.log(self.level, line.rstrip())
        finally:
            local.busy = False
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        local = self._local
        pending, local.pending = getattr(local, "pending", ""), ""
        if pending.strip():
            self.write(pending + "\n")

    def isatty(self) -> bool:
        return False


def redirect_stdouts(level: int | str = logging.WARNING) -> None:
    """Send ``sys.stdout`` and ``sys.stderr`` to the ``caraway.redirected`` logger at
    ``level`` (``worker_redirect_stdouts``); handlers made before keep the real streams."""
    number = level_number(level)
    redirected = logging.getLogger("caraway.redirected")
    if not isinstance(sys.stdout, LoggingProxy):
        sys.stdout = LoggingProxy(redirected, number, sys.stdout)
    if not isinstance(sys.stderr, LoggingProxy):
        sys.stderr = LoggingProxy(redirected, number, sys.stderr)


def restore_stdouts() -> None:
    """Put back the streams ``redirect_stdouts`` replaced (flushing what is pending), so
    interpreter shutdown flushes the real ones: a proxy's logger and thread-locals may be gone
    by then (under gevent the exit status became 120)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, LoggingProxy):
            stream.flush()
            setattr(sys, name, stream.fallback)


_NODE_FIELD = re.compile(r"%[phndiI%]")


def expand_node_path(template: str, nodename: str, index: int | None = None) -> str:
    """``--logfile``/``--pidfile`` with Celery's fields filled in.

    For node ``w1@host.example.com``: ``%p`` the node name, ``%h`` ``host.example.com``,
    ``%n`` ``w1``, ``%d`` ``example.com``; ``%i`` the pool child index (0 in the main
    process) and ``%I`` the same with a dash (``-1``; empty in the main process).
    """
    name, at, host = nodename.partition("@")
    if not at:
        name, host = "celery", nodename
    fields = {
        "%p": nodename, "%h": host, "%n": name, "%d": host.partition(".")[2],
        "%i": str(index or 0), "%I": f"-{index}" if index else "", "%%": "%",
    }  # fmt: skip
    return _NODE_FIELD.sub(lambda match: fields[match.group()], template)


__all__ = [
    "LOG_LEVELS",
    "LoggingProxy",
    "expand_node_path",
    "get_logger",
    "get_task_logger",
    "mlevel",
    "redirect_stdouts",
    "restore_stdouts",
    "setup_logging",
    "task_logger",
    "worker_logger",
]


class FirstFailure:
    """Logs a failure that repeats while a server is away as a warning once, then at debug
    until ``recovered``: a poll every second must not write a line every second (the
    consumer already reports the outage, its length and its end)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.failing = False

    def failed(self, message: str, *args: object) -> None:
        self.logger.log(logging.DEBUG if self.failing else logging.WARNING, message, *args)
        self.failing = True

    def recovered(self) -> None:
        self.failing = False
