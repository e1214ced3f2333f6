"""A user's own result backend, as ``mypkg/mod.py`` would hold it: results in a dict of this
process, named in ``result_backend`` by its class path."""

from __future__ import annotations

import threading

from caraway import states
from caraway.engines.base.backend import Backend, Stored


class NotesBackend(Backend):
    """The four primitives every backend fills in, and nothing else."""

    notes: dict[str, Stored] = {}  # noqa: RUF012 - shared on purpose: the test reads it
    counters: dict[str, int] = {}  # noqa: RUF012
    lock = threading.Lock()

    def get_raw(self, key: str) -> Stored | None:
        with self.lock:
            return self.notes.get(key)

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        with self.lock:
            current = self.notes.get(key)
            if state is not None and current is not None and self._done(current):
                return
            self.notes[key] = value

    def _done(self, stored: Stored) -> bool:
        return bool(self.decode(stored).get("status") == states.SUCCESS)

    def delete_raw(self, key: str) -> None:
        with self.lock:
            self.notes.pop(key, None)

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + amount
            return self.counters[key]
