"""The reference store: everything in this process, the lease timed by an injectable clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.utils.time import SYSTEM_CLOCK, Clock


class MemoryStore(BeatStore):
    """Shared by the beats (schedulers) handed the same instance: tests elect among them."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._owner: str | None = None
        self._expires = 0.0
        self._states: dict[str, EntryState] = {}
        self._definitions: dict[str, str] = {}
        self._version = 0

    def acquire(self, owner: str, ttl: float) -> bool:
        with self._lock:
            now = self.clock.monotonic()
            if self._owner in (None, owner) or now >= self._expires:
                self._owner, self._expires = owner, now + ttl
                return True
            return False

    def release(self, owner: str) -> None:
        with self._lock:
            if self._owner == owner:
                self._owner = None

    def still_held(self, owner: str) -> bool:
        with self._lock:
            return self._owner == owner and self.clock.monotonic() < self._expires

    def states(self) -> dict[str, EntryState]:
        with self._lock:
            return dict(self._states)

    def save_states(self, owner: str, states: Mapping[str, EntryState]) -> bool:
        with self._lock:
            if self._owner != owner or self.clock.monotonic() >= self._expires:
                return False
            self._states.update(states)
            return True

    def forget_state(self, name: str) -> None:
        with self._lock:
            self._states.pop(name, None)

    def definitions(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: json.loads(text) for name, text in self._definitions.items()}

    def put_definition(self, name: str, definition: Mapping[str, Any]) -> None:
        with self._lock:
            self._definitions[name] = json.dumps(dict(definition))
            self._version += 1

    def delete_definition(self, name: str) -> bool:
        with self._lock:
            found = self._definitions.pop(name, None) is not None
            self._states.pop(name, None)
            self._version += 1
            return found

    def version(self) -> int:
        with self._lock:
            return self._version
