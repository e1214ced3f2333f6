"""The scheduler: which entries are due, whether this beat may send them, and when to wake up.

Any number of beats may run. Each ``tick`` first makes sure this beat holds the store's
sender lease (taking it when free, renewing it when held); a beat without it only waits to
take over. The sender reloads the last recorded runs whenever it becomes the sender, and
records each run with its message (see ``BeatStore.send``), so a successor continues from
the exact state its predecessor left: no run twice, none skipped.

A run's recorded ``last_run_at`` is the time it was scheduled for (not when it was sent):
the next run keeps to the schedule, and runs missed while no beat was up collapse into one.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.beat.entry import ScheduleEntry, entries_from_config, entry_from_definition
from caraway.beat.stores import store_for_app
from caraway.beat.stores.file import FileStore
from caraway.calling import collecting
from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.engines.registry import in_process_beat_store
from caraway.exceptions import CarawayError, OperationalError
from caraway.schedules import use_clock
from caraway.utils.time import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.beat")

#: Celery's longest sleep of beat when ``beat_max_loop_interval`` is 0.
DEFAULT_MAX_INTERVAL = 300.0
#: How often the sender looks for schedules changed at runtime (one cheap read).
DEFINITIONS_POLL = 1.0
#: Pause after a failed send or store error before trying again.
ERROR_PAUSE = 1.0


class SchedulingError(CarawayError):
    """A due entry could not be sent (``Scheduler.apply_async``); beat logs it and retries."""


class Scheduler:
    """Celery's ``Scheduler``: state in memory only. Subclasses choose where it is kept."""

    default_max_interval = DEFAULT_MAX_INTERVAL

    def __init__(
        self,
        app: Caraway,
        max_interval: float | None = None,
        clock: Clock | None = None,
        store: BeatStore | None = None,
        lease_ttl: float | None = None,
        lazy: bool = False,
        **kwargs: Any,
    ) -> None:
        self.app = app
        self.clock = clock or SYSTEM_CLOCK
        conf = app.conf
        self.max_interval = float(
            max_interval or conf.beat_max_loop_interval or self.default_max_interval
        )
        self.lease_ttl = float(lease_ttl or conf.beat_lease_timeout)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.options = kwargs
        self.store = store if store is not None else self.create_store()
        self.data: dict[str, ScheduleEntry] = {}
        self.is_sender = False
        self._renew_at = 0.0
        self._lease_until = 0.0
        self._retry_at = 0.0
        self._poll_at = 0.0
        self._takeovers = 0
        self._version: int | None = None
        #: The entries ``setup_schedule`` made (a subclass may make its own): stored ones are
        #: added to copies of them whenever the stored schedules change.
        self._static: dict[str, ScheduleEntry] | None = None
        if not lazy:
            self._set_up()

    def _set_up(self) -> dict[str, ScheduleEntry]:
        if self._static is None:
            self.setup_schedule()
            self._static = dict(self.data)
        return self._static

    # --- what subclasses choose --------------------------------------------------------------

    def create_store(self) -> BeatStore:
        return in_process_beat_store(self.clock)

    def setup_schedule(self) -> None:
        self.data = entries_from_config(self.app)

    @property
    def schedule(self) -> dict[str, ScheduleEntry]:
        return self.data

    @property
    def info(self) -> str:
        return f"    . db -> {self.store.describe()}"

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), timezone.utc)

    # --- the loop's step ----------------------------------------------------------------------

    def tick(self) -> float:
        """Send what is due if this beat is the sender; returns seconds until the next tick."""
        with use_clock(self.now):
            try:
                if not self._lead():
                    return self._until(self._retry_at)
                self._refresh_definitions()
                return self._send_due()
            except (OperationalError, OSError) as exc:
                logger.error("beat: the schedule store failed: %s; retrying", exc)
                return ERROR_PAUSE

    def _lead(self) -> bool:
        """Hold the sender lease: take it when free, renew it a third of the way through."""
        mono = self.clock.monotonic()
        if self.is_sender and mono < self._renew_at:
            return True
        if not self.is_sender and mono < self._retry_at:
            return False
        held = self.store.acquire(self.owner, self.lease_ttl)
        if held:
            # Held again after it lapsed (the store was unreachable): another beat may have
            # sent meanwhile, so the recorded runs are read again as on a first takeover.
            lapsed = mono >= self._lease_until and not self.store.holds_while_alive
            self._renew_at = mono + self.lease_ttl / 3
            self._lease_until = mono + self.lease_ttl
            if not self.is_sender or lapsed:
                self._become_sender()
        else:
            if self.is_sender:
                logger.warning("beat: another beat holds the sender lease now; standing by")
            self.is_sender = False
            # A standby polls a few times per lease period, so takeover is within ~1.25 TTL.
            self._retry_at = mono + min(1.0, self.lease_ttl / 4)
        return self.is_sender

    def _become_sender(self) -> None:
        self.is_sender = True
        self._takeovers += 1
        logger.info("beat: this beat is the sender now (lease in %s)", self.store.describe())
        self._version = None
        self._refresh_definitions(force=True)
        self._adopt(self.data, self.store.states())

    def _adopt(self, entries: dict[str, ScheduleEntry], recorded: dict[str, EntryState]) -> None:
        """Give entries their recorded runs; new ones start now (and that is recorded)."""
        now = self.now()
        fresh: dict[str, EntryState] = {}
        for name, entry in entries.items():
            state = recorded.get(name)
            if state is not None:
                entry.last_run_at = datetime.fromtimestamp(state.last_run_at, timezone.utc)
                entry.total_run_count = state.total_run_count
            else:
                entry.last_run_at, entry.total_run_count = now, 0
                fresh[name] = EntryState(now.timestamp(), 0)
        if fresh:
            self.store.save_states(self.owner, fresh)

    def _refresh_definitions(self, force: bool = False) -> None:
        """Pick up schedules created, changed or deleted at runtime (polled every second)."""
        mono = self.clock.monotonic()
        if not force and mono < self._poll_at:
            return
        self._poll_at = mono + DEFINITIONS_POLL
        version = self.store.version()
        if version == self._version:
            return
        self._version = version
        entries = {name: replace(entry) for name, entry in self._set_up().items()}
        for name, definition in self.store.definitions().items():
            try:
                entries[name] = entry_from_definition(self.app, name, definition)
            except CarawayError as exc:
                logger.error("beat: skipping stored schedule %r: %s", name, exc)
        if force:
            self.data = entries
            return
        added = {n: e for n, e in entries.items() if n not in self.data}
        for name, entry in entries.items():
            if name in self.data:
                entry.last_run_at = self.data[name].last_run_at
                entry.total_run_count = self.data[name].total_run_count
        if added:
            self._adopt(added, self.store.states())
        removed = sorted(set(self.data) - set(entries))
        self.data = entries
        logger.info(
            "beat: schedules changed (%d now; added %s; removed %s)",
            len(entries), sorted(added) or "none", removed or "none",
        )  # fmt: skip

    def _send_due(self) -> float:
        waits = [self.max_interval]
        if not self.store.holds_while_alive:
            waits.append(self._until(self._renew_at))
        if self.store.stores_definitions:
            waits.append(self._until(self._poll_at))
        for entry in sorted(self.data.values(), key=lambda e: e.name):
            due, next_check = entry.is_due()
            if due:
                outcome = self._send(entry)
                if outcome is None:
                    return self._until(self._retry_at)
                next_check = entry.is_due()[1] if outcome else ERROR_PAUSE
            waits.append(next_check)
        return max(0.0, min(waits))

    def _send(self, entry: ScheduleEntry) -> bool | None:
        """Send one due run; True when sent, False on an error, None when the lease is lost."""
        if self.clock.monotonic() >= self._renew_at:
            takeovers = self._takeovers
            if not self._lead() or self._takeovers != takeovers:
                return None  # lost, or held anew with fresh records: decide on the next tick
        now = self.now()
        due = entry.due_time(now) if hasattr(entry.schedule, "due_time") else now
        state = EntryState(due.timestamp(), entry.total_run_count + 1)
        try:
            with collecting() as collected:
                self.apply_async(entry)
            sent = self.store.send(
                self.owner, entry.name, state, [o for o, _ in collected], self.app.broker
            )
        except Exception as exc:  # the run stays due: it is tried again, never dropped
            logger.error("beat: cannot send %s (%s): %s", entry.name, entry.task, exc)
            return False
        if not sent:
            logger.warning("beat: lost the sender lease before sending %s; standing by", entry.name)
            self.is_sender = False
            self._retry_at = self.clock.monotonic()
            return None
        entry.last_run_at, entry.total_run_count = due, state.total_run_count
        for _, after in collected:
            signals.after_task_publish.send(**after)
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        return True

    def apply_async(self, entry: ScheduleEntry) -> Any:
        """Send the entry's task as Celery's beat does: by the task object when registered.

        A failure is raised as ``SchedulingError`` naming the entry (the cause chained), as
        Celery's scheduler raises it, so a subclass can tell a failed send from its own bugs.
        """
        task = self.app.tasks.get(entry.task)
        try:
            if task is not None:
                return task.apply_async(entry.args, entry.kwargs, **entry.options)
            return self.app.send_task(entry.task, entry.args, entry.kwargs, **entry.options)
        except Exception as exc:
            raise SchedulingError(f"cannot send scheduled task {entry.name}: {exc!r}") from exc

    def _until(self, moment: float) -> float:
        return max(0.0, moment - self.clock.monotonic())

    # --- lifecycle ------------------------------------------------------------------------------

    def sync(self) -> None:
        """Runs are recorded as they are sent; kept for Celery's API."""

    def close(self) -> None:
        """Give the lease up so a standby takes over at once, and release the store."""
        try:
            if self.is_sender:
                self.store.release(self.owner)
        except (OperationalError, OSError) as exc:
            logger.warning("beat: could not release the sender lease: %s", exc)
        finally:
            self.is_sender = False
            self.store.close()


class PersistentScheduler(Scheduler):
    """Celery's default: runs recorded in ``beat_schedule_filename`` (``-s``), a lock on
    ``<file>.lock`` electing one sender among the beats of this machine."""

    def __init__(self, app: Caraway, *args: Any, schedule_filename: str | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        self.schedule_filename = schedule_filename or app.conf.beat_schedule_filename
        super().__init__(app, *args, **kwargs)

    def create_store(self) -> BeatStore:
        return FileStore(self.schedule_filename, sync_every=int(self.app.conf.beat_sync_every))


class DatabaseScheduler(Scheduler):
    """Schedules and runs kept in the result store (SQLite, Redis or SQL): editable at runtime
    (``caraway.beat.PeriodicTasks``, ``caraway beat schedules``), safe with many beats."""

    default_max_interval = 5.0

    def create_store(self) -> BeatStore:
        return store_for_app(self.app)
