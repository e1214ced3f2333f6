"""``cache+memory://``: results in this process only (tests), shared by every app in it."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.engines.base.backend import Backend, BackendCapabilities, Stored

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp

_STORE: dict[str, tuple[Stored, str | None, float | None]] = {}
_COUNTERS: dict[str, int] = {}
_CHANGED = threading.Condition()
_PARTS: dict[str, dict[str, bytes]] = {}
#: group id -> (finished?, expires at): a dispatch claim, or the "done" marker.
_CLAIMS: dict[str, tuple[bool, float]] = {}


class MemoryBackend(Backend):
    first_poll = 0.05  # waits are woken by the condition, so the pause is only a fallback
    capabilities = BackendCapabilities(chord_join="counting", compressed_results=True)

    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)

    def get_raw(self, key: str) -> Stored | None:
        with _CHANGED:
            entry = _STORE.get(key)
            if entry is None:
                return None
            if entry[2] is not None and entry[2] < time.time():
                del _STORE[key]
                return None
            return entry[0]

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        with _CHANGED:
            current = _STORE.get(key)
            if state is not None and current is not None and current[1] == states.SUCCESS:
                return
            _STORE[key] = (value, state, None if ttl is None else time.time() + ttl)
            _CHANGED.notify_all()

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        with _CHANGED:
            value = _COUNTERS.get(key, 0) + amount
            _COUNTERS[key] = value
            return value

    def delete_raw(self, key: str) -> None:
        with _CHANGED:
            _STORE.pop(key, None)
            _COUNTERS.pop(key, None)

    def wait_changed(self, key: str, timeout: float) -> None:
        with _CHANGED:
            _CHANGED.wait(timeout)

    def read_counter(self, key: str) -> int | None:
        with _CHANGED:
            return _COUNTERS.get(key)

    def chord_join(self, group_id: str, member: str, payload: bytes, ttl: float | None) -> int:
        with _CHANGED:
            claim = _CLAIMS.get(group_id)
            if claim is not None and claim[0] and claim[1] > time.time():
                return -1
            parts = _PARTS.setdefault(group_id, {})
            parts.setdefault(member, payload)
            return len(parts)

    def chord_members(self, group_id: str) -> list[tuple[str, bytes]]:
        with _CHANGED:
            return list(_PARTS.get(group_id, {}).items())

    def chord_claim(self, group_id: str, ttl: float) -> bool:
        with _CHANGED:
            claim, now = _CLAIMS.get(group_id), time.time()
            if claim is not None and (claim[0] or claim[1] > now):
                return False
            _CLAIMS[group_id] = (False, now + ttl)
            return True

    def chord_finish(self, group_id: str, ttl: float) -> None:
        with _CHANGED:
            _PARTS.pop(group_id, None)
            _CLAIMS[group_id] = (True, time.time() + ttl)
