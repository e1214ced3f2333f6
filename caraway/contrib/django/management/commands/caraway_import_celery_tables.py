"""``manage.py caraway_import_celery_tables``: copy the rows of django-celery-results and
django-celery-beat into caraway's tables, so a project switching over keeps its results,
its periodic tasks and their run counts.

The old tables are read with plain SQL (their apps need not be installed any more) and are
left as they were; rows already here (same task id, group id or task name) are kept, so the
command can be run again after a partial import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils.dateparse import parse_datetime

from caraway.contrib.django import changes
from caraway.contrib.django.backend import from_column
from caraway.contrib.django.models import (
    BeatRun,
    ClockedSchedule,
    CrontabSchedule,
    GroupResult,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
    TaskResult,
)

RESULTS = "django_celery_results_taskresult"
GROUPS = "django_celery_results_groupresult"
BEAT = "django_celery_beat_"
TASK_COLUMNS = (
    "task_id", "task_name", "task_args", "task_kwargs", "status", "worker", "content_type",
    "content_encoding", "result", "traceback", "meta", "date_created", "date_done",
)  # fmt: skip
GROUP_COLUMNS = (
    "group_id", "content_type", "content_encoding", "result", "date_created", "date_done",
)  # fmt: skip
SCHEDULES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "interval": (IntervalSchedule, ("every", "period")),
    "crontab": (
        CrontabSchedule,
        (
            "minute",
            "hour",
            "day_of_week",
            "day_of_month",
            "month_of_year",
            "timezone",
        ),
    ),
    "solar": (SolarSchedule, ("event", "latitude", "longitude")),
    "clocked": (ClockedSchedule, ("clocked_time",)),
}
TASK_FIELDS = (
    "name", "task", "args", "kwargs", "queue", "exchange", "routing_key", "headers", "priority",
    "expires", "expire_seconds", "one_off", "start_time", "enabled", "last_run_at",
    "total_run_count", "description",
)  # fmt: skip
DATES = {"date_created", "date_done", "clocked_time", "expires", "start_time", "last_run_at"}


class Command(BaseCommand):
    help = (
        "Copy results and periodic tasks from django-celery-results / django-celery-beat's"
        " tables into caraway's (the old tables are left untouched)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias.")

    def handle(self, *args: Any, database: str, **options: Any) -> None:
        reader = _Reader(database)
        with transaction.atomic(using=database):
            results = self._results(reader, database)
            groups = self._groups(reader, database)
            tasks = self._periodic(reader, database)
            if tasks:
                changes.bump(database)
        self.stdout.write(
            f"Imported {results} task results, {groups} group results and {tasks} periodic tasks."
        )

    def _results(self, reader: _Reader, database: str) -> int:
        rows = [TaskResult(**row) for row in reader.rows(RESULTS, TASK_COLUMNS)]
        return _add_new(TaskResult, rows, "task_id", database)

    def _groups(self, reader: _Reader, database: str) -> int:
        rows = [GroupResult(**row) for row in reader.rows(GROUPS, GROUP_COLUMNS)]
        return _add_new(GroupResult, rows, "group_id", database)

    def _periodic(self, reader: _Reader, database: str) -> int:
        """Schedules first (their old ids mapped to new rows), then the tasks, then each
        task's run record, so beat goes on counting from where django-celery-beat was."""
        made: dict[str, dict[Any, Any]] = {}
        for kind, (model, fields) in SCHEDULES.items():
            made[kind] = {
                row.pop("id"): model.objects.using(database).create(**row)
                for row in reader.rows(f"{BEAT}{kind}schedule", ("id", *fields))
            }
        known = set(PeriodicTask.objects.using(database).values_list("name", flat=True))
        count = 0
        columns = (*TASK_FIELDS, *(f"{kind}_id" for kind in SCHEDULES))
        for row in reader.rows(f"{BEAT}periodictask", columns):
            if row["name"] in known:
                continue
            for kind in SCHEDULES:
                row[kind] = made[kind].get(row.pop(f"{kind}_id"))
            row["headers"] = row.get("headers") or "{}"
            task = PeriodicTask.objects.using(database).create(**row)
            last = from_column(task.last_run_at)
            if last is not None:
                BeatRun.objects.using(database).update_or_create(
                    name=task.name,
                    defaults={"last_run_at": last.timestamp(),
                              "total_run_count": task.total_run_count},
                )  # fmt: skip
            count += 1
        return count


def _add_new(model: Any, rows: list[Any], key: str, database: str) -> int:
    wanted = [getattr(row, key) for row in rows]
    have = set(
        model.objects.using(database).filter(**{f"{key}__in": wanted}).values_list(key, flat=True)
    )
    new = [row for row in rows if getattr(row, key) not in have]
    model.objects.using(database).bulk_create(new, batch_size=500)
    return len(new)


class _Reader:
    """The old tables, read with plain SQL: only the columns both sides have."""

    def __init__(self, database: str) -> None:
        self.connection = connections[database]
        with self.connection.cursor() as cursor:
            self.tables = set(self.connection.introspection.table_names(cursor))

    def rows(self, table: str, wanted: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        if table not in self.tables:
            return
        with self.connection.cursor() as cursor:
            described = self.connection.introspection.get_table_description(cursor, table)
            present = {column.name for column in described}
            columns = [column for column in wanted if column in present]
            quote = self.connection.ops.quote_name
            cursor.execute(f"SELECT {', '.join(map(quote, columns))} FROM {quote(table)}")
            for values in cursor.fetchall():
                yield {c: _value(c, v) for c, v in zip(columns, values, strict=True)}


def _value(column: str, value: Any) -> Any:
    if column in DATES and isinstance(value, str):
        value = parse_datetime(value)
    if column in DATES and isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # Django stores UTC with USE_TZ
    if column in {"task_args", "task_kwargs"} and value is not None and not isinstance(value, str):
        value = json.dumps(value)
    return value
