"""The database scheduler's store in the Django database: the sender lease and each
entry's recorded run in caraway's own rows, the definitions in the admin's ``PeriodicTask``
rows, and the version in ``ScheduleChange`` (moved by every edit).

The lease row is claimed with one conditional UPDATE (free, expired, or already ours), which
every database runs atomically; a write of run states first updates the lease row it holds,
so the row stays locked until the states are committed, and a beat that lost the lease
writes nothing. Lease expiry compares this machine's clock with the time the last holder
wrote: keep the beats' clocks in sync (NTP) to well within ``beat_lease_timeout``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import IntegrityError, router, transaction
from django.db.models import Q

from caraway.contrib.django import changes
from caraway.contrib.django.backend import to_column
from caraway.contrib.django.definitions import definition_of, write_definition
from caraway.contrib.django.models import BeatLease, BeatRun, PeriodicTask
from caraway.contrib.django.setup import translated
from caraway.engines.base.beat_store import BeatStore, EntryState

if TYPE_CHECKING:
    from caraway.app import Caraway

T = TypeVar("T")
logger = logging.getLogger("caraway.beat")
LEASE_NAME = "beat"


class DjangoStore(BeatStore):
    def __init__(self, app: Caraway) -> None:
        self.app = app
        self.alias = str(router.db_for_write(PeriodicTask))

    def describe(self) -> str:
        return f"the Django database {self.alias!r}"

    def _run(self, work: Callable[[], T]) -> T:
        with translated(f"Django beat store ({self.describe()})", self.alias):
            return work()

    def _lease(self) -> Any:
        return BeatLease.objects.using(self.alias).filter(name=LEASE_NAME)

    # --- the lease ----------------------------------------------------------------------

    def acquire(self, owner: str, ttl: float) -> bool:
        def work() -> bool:
            now = time.time()
            free_or_ours = self._lease().filter(Q(owner=owner) | Q(expires_at__lte=now))
            if free_or_ours.update(owner=owner, expires_at=now + ttl):
                return True
            try:
                with transaction.atomic(using=self.alias):
                    BeatLease.objects.using(self.alias).create(
                        name=LEASE_NAME, owner=owner, expires_at=now + ttl
                    )
            except IntegrityError:  # held by another beat (or created by it just now)
                return False
            return True

        return self._run(work)

    def release(self, owner: str) -> None:
        self._run(lambda: self._lease().filter(owner=owner).delete())

    def still_held(self, owner: str) -> bool:
        def held() -> bool:
            return bool(self._lease().filter(owner=owner, expires_at__gt=time.time()).exists())

        return self._run(held)

    # --- run states ---------------------------------------------------------------------

    def states(self) -> dict[str, EntryState]:
        rows = self._run(lambda: list(BeatRun.objects.using(self.alias).all()))
        return {row.name: EntryState(row.last_run_at, row.total_run_count) for row in rows}

    def save_states(self, owner: str, states: Mapping[str, EntryState]) -> bool:
        """Record ``states`` while ``owner`` holds the lease; the admin's run count and last
        run are updated with them (a bulk update: it does not count as an edit)."""
        if not states:
            return self.still_held(owner)

        def work() -> bool:
            with transaction.atomic(using=self.alias):
                held = self._lease().filter(owner=owner, expires_at__gt=time.time())
                if not held.update(owner=owner):  # locks the lease row until commit
                    return False
                runs = BeatRun.objects.using(self.alias)
                tasks = PeriodicTask.objects.using(self.alias)
                for name, state in states.items():
                    runs.update_or_create(
                        name=name,
                        defaults={"last_run_at": state.last_run_at,
                                  "total_run_count": state.total_run_count},
                    )  # fmt: skip
                    tasks.filter(name=name).update(
                        last_run_at=to_column(
                            datetime.fromtimestamp(state.last_run_at, timezone.utc)
                        ),
                        total_run_count=state.total_run_count,
                    )
                return True

        return self._run(work)

    def forget_state(self, name: str) -> None:
        self._run(lambda: BeatRun.objects.using(self.alias).filter(name=name).delete())

    # --- definitions --------------------------------------------------------------------

    def definitions(self) -> dict[str, dict[str, Any]]:
        """Every periodic task row; a row that cannot be read is logged and left out."""
        rows = self._run(
            lambda: list(
                PeriodicTask.objects.using(self.alias).select_related(
                    "interval", "crontab", "solar", "clocked"
                )
            )
        )
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            try:
                found[row.name] = definition_of(row)
            except (ValueError, TypeError) as exc:
                logger.error("beat: periodic task %r cannot be read, skipped: %s", row.name, exc)
        return found

    def put_definition(self, name: str, definition: Mapping[str, Any]) -> None:
        def write() -> None:
            with transaction.atomic(using=self.alias):
                write_definition(self.app, name, definition)

        def work() -> None:
            try:
                write()
            except IntegrityError:  # another beat created it meanwhile (both starting): update
                write()

        self._run(work)

    def delete_definition(self, name: str) -> bool:
        def work() -> bool:
            with transaction.atomic(using=self.alias):
                deleted, _ = PeriodicTask.objects.using(self.alias).filter(name=name).delete()
                BeatRun.objects.using(self.alias).filter(name=name).delete()
                return bool(deleted)

        return self._run(work)

    def version(self) -> int:
        return self._run(lambda: changes.version(self.alias))
