"""What one worker knows at run time: revoked ids, active jobs, counts."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter, OrderedDict
from pathlib import Path
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

    def save(self, path: str | Path) -> None:
        """Write the revoked ids to ``path`` (``--statedb``), atomically."""
        target = Path(path)
        with self.lock:
            data = {"revoked": list(self.revoked)}
        scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(data))
        os.replace(scratch, target)

    def load(self, path: str | Path) -> int:
        """Read revoked ids saved by an earlier run; returns how many. No file: none."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot read the worker state file {path}: {exc}. Delete it or choose"
                " another --statedb."
            ) from exc
        revoked = data.get("revoked", []) if isinstance(data, dict) else []
        for task_id in revoked:
            self.revoke(str(task_id))
        return len(revoked)

    @property
    def total_processed(self) -> int:
        return sum(self.processed.values())
