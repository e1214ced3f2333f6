"""``result_backend = "django-db"``: task and group results as rows of the Django database,
through the ORM (so ``DATABASES``, routers and the admin all see them).

Rows are written as django-celery-results writes its own: the result encoded with
``result_serializer``, the task's name and worker, and with ``result_extended`` its
arguments. A row that holds SUCCESS is never overwritten; each write is its own short
transaction (``ATOMIC_REQUESTS`` or an open ``atomic()`` block of the caller aside).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.conf import settings
from django.db import IntegrityError, router, transaction
from django.db.models import F
from django.utils import timezone

from caraway import states
from caraway.contrib.django.setup import ensure_django, translated
from caraway.engines.base.backend import (
    GROUP_KEY_PREFIX,
    TASK_KEY_PREFIX,
    Backend,
    BackendCapabilities,
    Stored,
)
from caraway.utils.time import parse_iso

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.beat_store import BeatStore

T = TypeVar("T")
UTC = dt_timezone.utc
#: ``content_encoding`` of a result kept as base64 text (a binary serializer's payload).
BASE64 = "base64"
#: Task ids per ``IN (...)`` query (SQLite allows 999 variables before 3.32).
IN_CHUNK = 500
#: Meta keys kept as JSON in the ``meta`` column (the others have columns of their own).
_META_KEYS = ("children", "group_id", "parent_id", "retries", "queue")
_EXTENDED_KEYS = ("name", "args", "kwargs", "worker", "retries", "queue")


def _models() -> ModuleType:
    ensure_django()
    # Lazy, Django's models load only once its app registry is ready (django.setup()).
    from caraway.contrib.django import models

    return models


def to_column(moment: datetime | None) -> datetime | None:
    """An aware time as Django stores it: aware with ``USE_TZ``, naive local time without."""
    if moment is None or settings.USE_TZ:
        return moment
    naive: datetime = timezone.make_naive(moment)
    return naive


def from_column(moment: datetime | None) -> datetime | None:
    if moment is None or timezone.is_aware(moment):
        return moment
    aware: datetime = timezone.make_aware(moment)
    return aware


class DjangoBackend(Backend):
    capabilities = BackendCapabilities(beat_schedules=True)

    def __init__(self, app: Caraway, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)
        self._models: ModuleType | None = None

    @property
    def models(self) -> ModuleType:
        if self._models is None:
            self._models = _models()
        return self._models

    @property
    def alias(self) -> str:
        """The database results are written to (``DATABASE_ROUTERS`` may pick another)."""
        return str(router.db_for_write(self.models.TaskResult))

    def describe(self) -> str:
        return f"the Django database {self.alias!r}"

    def beat_store(self) -> BeatStore:
        self.models  # noqa: B018 - sets Django up before the store's module loads the models
        # Lazy, the beat store's module imports the models, which need Django set up.
        from caraway.contrib.django.beat_store import DjangoStore

        # The registry builds engines with the app itself; the engine contract only names
        # the members engines read (EngineApp), and the store writes definitions with its app.
        return DjangoStore(cast("Caraway", self.app))

    @contextmanager
    def _translated(self) -> Iterator[None]:
        with translated(f"django-db result backend ({self.describe()})", self.alias):
            yield

    def _run(self, work: Callable[[], T]) -> T:
        with self._translated():
            return work()

    # --- encoding ---------------------------------------------------------------------

    def _text(self, value: Any) -> tuple[str, str, str]:
        """``value`` encoded as text: the payload itself, or base64 for binary payloads."""
        stored = self.encode(value)
        if stored.content_encoding.lower() in {"utf-8", "utf8"}:
            return stored.payload.decode("utf-8"), stored.content_type, stored.content_encoding
        return base64.b64encode(stored.payload).decode("ascii"), stored.content_type, BASE64

    def _value(self, text: str | None, content_type: str, content_encoding: str) -> Any:
        if text is None:
            return None
        if content_encoding == BASE64:
            return self.decode(Stored(base64.b64decode(text), content_type, "binary"))
        return self.decode(Stored(text.encode("utf-8"), content_type, content_encoding))

    # --- tasks ------------------------------------------------------------------------

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None,
        request: Any,
    ) -> dict[str, Any]:
        meta = self.build_meta(task_id, result, state, traceback, request)
        values = self._columns(meta, request)
        rows = self.models.TaskResult.objects.using(self.alias)
        unfinished = rows.filter(task_id=task_id).exclude(status=states.SUCCESS)

        def write() -> None:
            if unfinished.update(**values):
                return
            try:
                with transaction.atomic(using=self.alias):
                    rows.create(task_id=task_id, **values)
            except IntegrityError:  # written meanwhile by another process: update it
                unfinished.update(**values)

        self._run(write)
        return meta

    def _columns(self, meta: Mapping[str, Any], request: Any) -> dict[str, Any]:
        text, content_type, content_encoding = self._text(meta["result"])
        extras = {key: meta[key] for key in _META_KEYS if key in meta}
        values: dict[str, Any] = {
            "status": meta["status"],
            "result": text,
            "content_type": content_type,
            "content_encoding": content_encoding,
            "traceback": meta.get("traceback"),
            "date_done": to_column(parse_iso(meta.get("date_done"))),
            "meta": json.dumps(extras, default=str) if extras else None,
            # The name and worker help find a row in the admin: kept even when not extended.
            "task_name": meta.get("name") or getattr(request, "task", None),
            "worker": meta.get("worker") or getattr(request, "hostname", None),
        }
        if self.extended:
            values["task_args"] = self._text(meta.get("args"))[0]
            values["task_kwargs"] = self._text(meta.get("kwargs"))[0]
        return values

    def _meta_of_row(self, row: Any) -> dict[str, Any]:
        done = from_column(row.date_done)
        meta: dict[str, Any] = {
            "status": row.status,
            "result": self._value(row.result, row.content_type, row.content_encoding),
            "traceback": row.traceback,
            "children": [],
            "date_done": None if done is None else done.astimezone(UTC).isoformat(),
        }
        if row.meta:
            meta.update(json.loads(row.meta))
        if self.extended:
            meta.update(name=row.task_name, worker=row.worker)
            for key, column in (("args", row.task_args), ("kwargs", row.task_kwargs)):
                meta[key] = self._value(column, row.content_type, row.content_encoding)
            for key in _EXTENDED_KEYS:
                meta.setdefault(key, None)
        meta["task_id"] = row.task_id
        return meta

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        return self.get_many_task_meta([task_id])[0]

    def get_many_task_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        rows = self.models.TaskResult.objects.using(self.alias)
        found: dict[str, Any] = {}
        for start in range(0, len(task_ids), IN_CHUNK):
            query = rows.filter(task_id__in=list(task_ids[start : start + IN_CHUNK]))
            batch: list[Any] = self._run(partial(list, query))
            found.update((row.task_id, row) for row in batch)
        return [
            self._meta_of_row(found[task_id]) if task_id in found else self.meta_of(task_id, None)
            for task_id in task_ids
        ]

    def forget(self, task_id: str) -> None:
        rows = self.models.TaskResult.objects.using(self.alias)
        self._run(lambda: rows.filter(task_id=task_id).delete())

    # --- groups -------------------------------------------------------------------------

    def save_group(self, group_id: str, result: Any) -> Any:
        text, content_type, content_encoding = self._text(result)
        rows = self.models.GroupResult.objects.using(self.alias)
        defaults = {
            "result": text,
            "content_type": content_type,
            "content_encoding": content_encoding,
            "date_done": timezone.now(),
        }
        self._run(lambda: rows.update_or_create(group_id=group_id, defaults=defaults))
        return result

    def restore_group(self, group_id: str) -> Any:
        rows = self.models.GroupResult.objects.using(self.alias)
        row = self._run(lambda: rows.filter(group_id=group_id).first())
        if row is None:
            return None
        return self._value(row.result, row.content_type, row.content_encoding)

    def delete_group(self, group_id: str) -> None:
        rows = self.models.GroupResult.objects.using(self.alias)
        self._run(lambda: rows.filter(group_id=group_id).delete())

    def cleanup(self) -> int:
        """Delete results finished longer than ``result_expires`` ago, and stale counters."""
        models, now = self.models, timezone.now()

        def work() -> int:
            models.ResultCounter.objects.using(self.alias).filter(expires_at__lt=now).delete()
            if self.expires is None:
                return 0
            cutoff = now - timedelta(seconds=self.expires)
            models.GroupResult.objects.using(self.alias).filter(date_done__lt=cutoff).delete()
            deleted, _ = (
                models.TaskResult.objects.using(self.alias).filter(date_done__lt=cutoff).delete()
            )
            return int(deleted)

        return self._run(work)

    # --- engine primitives ----------------------------------------------------------------

    def get_raw(self, key: str) -> Stored | None:
        raise NotImplementedError(
            "the django-db result backend keeps rows, not encoded payloads:"
            " use get_task_meta()/restore_group()"
        )

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        raise NotImplementedError(
            "the django-db result backend keeps rows, not encoded payloads:"
            " use store_result()/save_group()"
        )

    def delete_raw(self, key: str) -> None:
        if key.startswith(TASK_KEY_PREFIX):
            self.forget(key.removeprefix(TASK_KEY_PREFIX))
        elif key.startswith(GROUP_KEY_PREFIX):
            self.delete_group(key.removeprefix(GROUP_KEY_PREFIX))
        counters = self.models.ResultCounter.objects.using(self.alias)
        self._run(lambda: counters.filter(key=key).delete())

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add in one UPDATE (the row stays locked until commit), creating the row the first
        time; the new value is read back inside the same transaction."""
        expires_at = None if ttl is None else timezone.now() + timedelta(seconds=ttl)
        counters = self.models.ResultCounter.objects.using(self.alias)
        row = counters.filter(key=key)
        bumped = {"value": F("value") + amount, "expires_at": expires_at}

        def work() -> int:
            with transaction.atomic(using=self.alias):
                if not row.update(**bumped):
                    try:
                        with transaction.atomic(using=self.alias):
                            counters.create(key=key, value=amount, expires_at=expires_at)
                        return amount
                    except IntegrityError:  # created by another process meanwhile
                        row.update(**bumped)
                return int(row.values_list("value", flat=True).get())

        return self._run(work)

    def read_counter(self, key: str) -> int | None:
        counters = self.models.ResultCounter.objects.using(self.alias)
        value = self._run(lambda: counters.filter(key=key).values_list("value", flat=True).first())
        return None if value is None else int(value)
