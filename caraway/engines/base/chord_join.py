"""How a chord's header results are joined in the worker, per kind of result backend.

* ``RedisJoiner`` (``redis.chord_join``): Celery 5.7's keys and steps (docs/celery-wire.md §6.5).
  Per chord ``<gid>`` (under ``celery-taskset-meta-``): ``.j`` the results (a zset scored by
  ``group_index``, members ``[1, task_id, state, result]``), ``.s`` the header size, ``.t``
  parts added at run time, ``.d`` the ``<task_id>:<index>`` members already counted, ``.c``
  the dispatch claim (a token), then ``"done"``, or ``"failed"`` (the results stay, as in
  Celery, and late parts join them). Celery 5.7 and caraway workers can run parts
  of the same chord; 5.5's keys (no ``.d``/``.c``) are tolerated.
* ``CountingJoiner``: backends that count with the ``chord_*`` primitives: a set of
  ``<task_id>:<index>`` members counted atomically, and a claim.

Either way a redelivered part is counted once, and one delivery wins the right to finish.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from caraway.engines.base.backend import GROUP_KEY_PREFIX

if TYPE_CHECKING:
    from caraway.engines.base.backend import Backend

#: How long a dispatch claim holds before another delivery may take it over (a crash).
CLAIM_SECONDS = 10
#: How long the "done" marker stops late duplicates of header tasks (Celery: 300 s).
DONE_SECONDS = 300


@dataclass(slots=True)
class Join:
    """One header result recorded: how many are in, out of how many, and whether this
    delivery won the right to finish the chord."""

    count: int
    total: int | None
    claimed: bool
    done: bool = False
    token: str = ""


class Joiner(Protocol):
    def begin(self, gid: str, size: int) -> None:
        """Before the header is sent: keep its size where the join reads it."""

    def grow(self, gid: str) -> None:
        """One more header part to wait for (``add_to_chord``)."""

    def add(self, gid: str, task_id: str, index: int | None, state: str, result: Any) -> Join:
        """Record one part (once per task id and index) and try to claim when complete."""

    def claim(self, gid: str, join: Join) -> bool:
        """Take the claim to finish the chord early (a failure)."""

    def results(self, gid: str) -> list[tuple[str, str, Any]]:
        """Every part as ``(task_id, state, result)``, in header order."""

    def finish(self, gid: str, join: Join, failed: bool = False) -> None:
        """Drop the join state and leave a "done" marker for late duplicates (a failed
        chord may keep its results, as Celery's Redis join does)."""


def total_key(gid: str) -> str:
    """The counter of header parts added at run time (``add_to_chord``)."""
    return f"{GROUP_KEY_PREFIX}{gid}.t"


class CountingJoiner:
    """The join on a backend that counts: a set of ``<task_id>:<index>`` members per chord."""

    def __init__(self, backend: Backend, size: int | None) -> None:
        self.backend = backend
        self.size = size

    def begin(self, gid: str, size: int) -> None:
        """Nothing to keep: the size travels in the chord body (``chord_size``)."""

    def grow(self, gid: str) -> None:
        backend = self.backend
        backend.incr(total_key(gid), 1, backend.expires)

    def add(self, gid: str, task_id: str, index: int | None, state: str, result: Any) -> Join:
        backend = self.backend
        member = f"{task_id}:{'+inf' if index is None else index}"
        payload = backend.encode([1, task_id, state, result]).payload
        count = backend.chord_join(gid, member, payload, backend.expires)
        if count < 0:
            return Join(count, None, False, done=True)
        total = (self.size or 0) + (backend.read_counter(total_key(gid)) or 0)
        join = Join(count, total, False)
        if count >= total:
            self.claim(gid, join)
        return join

    def claim(self, gid: str, join: Join) -> bool:
        join.claimed = self.backend.chord_claim(gid, CLAIM_SECONDS)
        return join.claimed

    def results(self, gid: str) -> list[tuple[str, str, Any]]:
        backend = self.backend
        parts = []
        for member, payload in backend.chord_members(gid):
            index = member.rpartition(":")[2]
            _, task_id, state, result = backend.decode(backend.stored(payload))
            parts.append((float(index), task_id, state, result))
        parts.sort(key=lambda part: part[0])
        return [(task_id, state, result) for _, task_id, state, result in parts]

    def finish(self, gid: str, join: Join, failed: bool = False) -> None:
        self.backend.chord_finish(gid, DONE_SECONDS)
        self.backend.delete_raw(total_key(gid))


def new_token() -> str:
    return uuid.uuid4().hex
