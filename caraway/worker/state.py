"""What one worker knows at run time: revoked ids, active jobs, counts."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Revoked ids kept in memory (oldest forgotten first), as Celery's REVOKES_MAX.
REVOKES_MAX = 50_000

#: Stamp values flagged by ``revoke_by_stamped_headers`` (stamp name -> values). One map per
#: process, as in Celery, where code clears it with ``worker.state.revoked_stamps.clear()``;
#: every worker of the process honours it. Kept in memory only, like Celery's.
revoked_stamps: dict[str, list[Any]] = {}


class WorkerState:
    def __init__(self) -> None:
        self.revoked: OrderedDict[str, bool] = OrderedDict()
        self.revoked_stamps = revoked_stamps
        self.active: dict[str, Any] = {}
        self.processed: Counter[str] = Counter()
        self.lock = threading.Lock()
        #: Told of each revocation (id, terminate) and flagged stamps (headers): prefork
        #: children that fetch for themselves check their own copy before they run a task.
        self.on_revoke: Callable[[str, bool], None] | None = None
        self.on_revoke_stamps: Callable[[dict[str, Any]], None] | None = None
        #: Waits until the control requests already received are handled (the pidbox's):
        #: called before a stamped task's check, so a revoke sent before it is seen.
        self.settle_control: Callable[[], None] | None = None

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        with self.lock:
            self.revoked[task_id] = terminate
            while len(self.revoked) > REVOKES_MAX:
                self.revoked.popitem(last=False)
        if self.on_revoke is not None:
            self.on_revoke(task_id, terminate)

    def is_revoked(self, task_id: str, stamps: dict[str, Any] | None = None) -> bool:
        if stamps and self.settle_control is not None:
            self.settle_control()
        return task_id in self.revoked or self.revoking_stamp(stamps) is not None

    def revoke_stamps(self, headers: dict[str, Any]) -> None:
        """Flag these stamp values: a task carrying any of them is not run."""
        with self.lock:
            for name, values in headers.items():
                known = self.revoked_stamps.setdefault(name, [])
                known.extend(v for v in _values(values) if v not in known)
        if self.on_revoke_stamps is not None:
            self.on_revoke_stamps(headers)

    def revoking_stamp(self, stamps: dict[str, Any] | None) -> tuple[str, Any] | None:
        """The first of ``stamps`` flagged as revoked, as (name, value); None if none is."""
        return matching_stamp(stamps, self.revoked_stamps)

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


def _values(value: Any) -> list[Any]:
    """A stamp holds one value or a list of them."""
    return list(value) if isinstance(value, list | tuple | set) else [value]


def matching_stamp(
    stamps: dict[str, Any] | None, flagged: dict[str, Any]
) -> tuple[str, Any] | None:
    """The first stamp (name, value) among ``flagged``'s values; a list stamp matches by
    any of its values, as in Celery."""
    for name, value in (stamps or {}).items():
        if name not in flagged:
            continue
        wanted = _values(flagged[name])
        for one in _values(value):
            if one is not None and one in wanted:
                return name, one
    return None
