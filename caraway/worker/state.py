"""What one worker knows at run time: revoked ids, active jobs, counts."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import Any

#: Revoked ids kept in memory (oldest forgotten first), as Celery's REVOKES_MAX.
REVOKES_MAX = 50_000


class WorkerState:
    def __init__(self) -> None:
        self.revoked: OrderedDict[str, bool] = OrderedDict()
        self.active: dict[str, Any] = {}
        self.processed: Counter[str] = Counter()
        self.lock = threading.Lock()

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        with self.lock:
            self.revoked[task_id] = terminate
            while len(self.revoked) > REVOKES_MAX:
                self.revoked.popitem(last=False)

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self.revoked

    def task_done(self, name: str) -> None:
        with self.lock:
            self.processed[name] += 1

    @property
    def total_processed(self) -> int:
        return sum(self.processed.values())
