"""Task states and their precedence, as Celery defines them.

A state with higher precedence wins when two writers race (a late STARTED never hides a
SUCCESS). Custom states rank between FAILURE and REVOKED, as in Celery.
"""

from __future__ import annotations

from typing import Any

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"

#: Highest precedence first; ``None`` marks where custom states rank.
PRECEDENCE: tuple[str | None, ...] = (
    SUCCESS,
    FAILURE,
    None,
    REVOKED,
    STARTED,
    RECEIVED,
    REJECTED,
    RETRY,
    PENDING,
)
_LOOKUP = {name: index for index, name in enumerate(PRECEDENCE)}
_CUSTOM = _LOOKUP[None]

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})


def precedence(state: str | None) -> int:
    """Rank of ``state``: a lower number means a stronger state."""
    return _LOOKUP.get(state, _CUSTOM)


class state(str):
    """A state name that compares by precedence: ``state(SUCCESS) > state(PENDING)``."""

    def __gt__(self, other: Any) -> bool:
        return precedence(self) < precedence(other)

    def __ge__(self, other: Any) -> bool:
        return precedence(self) <= precedence(other)

    def __lt__(self, other: Any) -> bool:
        return precedence(self) > precedence(other)

    def __le__(self, other: Any) -> bool:
        return precedence(self) >= precedence(other)

    __hash__ = str.__hash__


__all__ = [
    "ALL_STATES",
    "EXCEPTION_STATES",
    "FAILURE",
    "IGNORED",
    "PENDING",
    "PRECEDENCE",
    "PROPAGATE_STATES",
    "READY_STATES",
    "RECEIVED",
    "REJECTED",
    "RETRY",
    "REVOKED",
    "STARTED",
    "SUCCESS",
    "UNREADY_STATES",
    "precedence",
    "state",
]
