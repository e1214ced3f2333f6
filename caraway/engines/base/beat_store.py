"""Where beat keeps what must outlive a process: the sender lease, the last run of each entry
and the entries created at runtime.

One contract, filled in by memory (tests), a file (``PersistentScheduler``), SQLite, Redis and
SQL. The lease elects one sender among any number of beats: ``acquire`` takes it when free
(or expired) and renews it for its owner; a write of run state is refused unless the writer
still holds it, so a beat that lost the lease cannot record, and a successor resumes from
exactly what the last sender recorded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.engines.base.broker import Broker, Outgoing

__all__ = ["BeatStore", "EntryState"]


@dataclass(frozen=True)
class EntryState:
    """The run an entry last sent: its scheduled time (a UNIX timestamp) and the count."""

    last_run_at: float
    total_run_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"last_run_at": self.last_run_at, "total_run_count": self.total_run_count}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntryState:
        return cls(float(data["last_run_at"]), int(data.get("total_run_count") or 0))


class BeatStore(ABC):
    """The lease, the run states and the stored definitions of one group of beats."""

    #: True when the lease is a lock held as long as the process lives (nothing to renew).
    holds_while_alive = False
    #: True when schedules can be stored here at runtime (then beats poll ``version``).
    stores_definitions = True

    # --- the sender lease ----------------------------------------------------------------------

    @abstractmethod
    def acquire(self, owner: str, ttl: float) -> bool:
        """Take the lease for ``owner`` for ``ttl`` seconds, or renew it; True when held."""

    @abstractmethod
    def release(self, owner: str) -> None:
        """Give the lease up now (a clean shutdown), so a standby takes over at once."""

    # --- run states ----------------------------------------------------------------------------

    @abstractmethod
    def states(self) -> dict[str, EntryState]:
        """The recorded state of every entry, by name."""

    @abstractmethod
    def save_states(self, owner: str, states: Mapping[str, EntryState]) -> bool:
        """Record states if ``owner`` holds the lease; False (nothing written) if not."""

    def send(
        self, owner: str, name: str, state: EntryState, batch: Sequence[Outgoing], broker: Broker
    ) -> bool:
        """Publish ``batch`` and record ``state``, only while ``owner`` holds the lease.

        The default publishes first and records second: a crash between the two (a window
        of one round trip) makes the successor send that run again. Stores that share a
        server with the broker override this to do both in one atomic step.
        """
        if not self.still_held(owner):
            return False
        broker.publish(batch)
        return self.save_states(owner, {name: state})

    def still_held(self, owner: str) -> bool:
        """Whether ``owner`` holds the lease right now (one read)."""
        return True

    def forget_state(self, name: str) -> None:  # noqa: B027 - stores without states ignore it
        """Drop the recorded state of an entry that was removed."""

    # --- stored definitions (the database scheduler) --------------------------------------

    def definitions(self) -> dict[str, dict[str, Any]]:
        """Entries created at runtime: name → JSON definition."""
        return {}

    def put_definition(self, name: str, definition: Mapping[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot store schedules")

    def delete_definition(self, name: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} cannot store schedules")

    def version(self) -> int:
        """A number that changes whenever a definition is written: beats poll it."""
        return 0

    def close(self) -> None:  # noqa: B027 - most stores hold nothing
        """Release connections and locks."""

    def describe(self) -> str:
        return type(self).__name__
