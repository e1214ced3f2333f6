"""caraway: a fast, Celery-compatible distributed task queue.

Code written for Celery runs after changing ``celery`` to ``caraway`` in its imports.
"""

# First, before anything it affects is imported: ``caraway worker -P gevent`` patches the
# standard library here (nothing happens in any other process; see caraway.utils.green).
import caraway.utils.green  # noqa: F401
from caraway.app import Caraway, Celery, bugreport, shared_task
from caraway.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from caraway.current import current_app, current_task
from caraway.result import AsyncResult, EagerResult, GroupResult, ResultSet
from caraway.task import Task
from caraway.utils.ids import new_id as uuid
from caraway.version import __version__

VERSION = (0, 1, 0)

__all__ = [
    "VERSION",
    "AsyncResult",
    "Caraway",
    "Celery",
    "EagerResult",
    "GroupResult",
    "ResultSet",
    "Signature",
    "Task",
    "__version__",
    "bugreport",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "subtask",
    "uuid",
    "xmap",
    "xstarmap",
]
