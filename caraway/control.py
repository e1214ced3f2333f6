"""``app.control``: asking workers to do things. Revocation is what the core needs.

Brokers that can keep revocations (the embedded SQLite file, memory) store them, so a worker
started later still honours them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.app import Caraway


class Control:
    def __init__(self, app: Caraway) -> None:
        self.app = app

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Tell every worker not to run these tasks; they are stored as REVOKED."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.broker.revoke(ids, terminate=terminate)

    def purge(self) -> int:
        """Delete waiting messages from the queues the app knows; returns how many."""
        from caraway.routing import queue_names

        queues = queue_names(self.app.conf.task_queues) or {self.app.conf.task_default_queue}
        return sum(self.app.broker.purge(queue) for queue in sorted(queues))

    discard_all = purge
