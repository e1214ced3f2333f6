"""``ExceptionInfo``: an exception with its formatted traceback, handed to task hooks."""

from __future__ import annotations

import sys
import traceback as tb
from types import TracebackType


class ExceptionInfo:
    """What ``on_failure``/``on_retry`` receive as ``einfo``, as in Celery."""

    def __init__(self, exc: BaseException | None = None) -> None:
        if exc is None:
            exc = sys.exc_info()[1]
        if exc is None:
            raise ValueError("ExceptionInfo() needs an exception or an active one")
        self.exception: BaseException = exc
        self.type: type[BaseException] = type(exc)
        self.tb: TracebackType | None = exc.__traceback__
        self.traceback: str = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))

    @classmethod
    def from_text(cls, exc: BaseException, traceback: str) -> ExceptionInfo:
        """An ``einfo`` whose traceback was formatted elsewhere (a prefork child)."""
        info = cls.__new__(cls)
        info.exception, info.type, info.tb, info.traceback = exc, type(exc), None, traceback
        return info

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"
