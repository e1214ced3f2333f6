"""The Django database's engines by the names Celery users know, and its two schedules.

Nothing here imports Django (tests/unit checks that configuration stays lazy about it): the
names are checked in the tables, and the engines behind them run in tests/contract and
tests/examples.
"""

from __future__ import annotations

import pickle
from datetime import datetime, timezone

import pytest

from caraway import Celery
from caraway.beat.service import SCHEDULER_ALIASES
from caraway.contrib.django.schedules import ZonedCrontab, clocked
from caraway.engines.base.backend import Backend
from caraway.engines.memory.backend import MemoryBackend
from caraway.engines.registry import BACKENDS, _load
from caraway.exceptions import ImproperlyConfigured


def test_django_db_is_a_bare_name_in_the_backend_table() -> None:
    assert BACKENDS["django-db"] == ("caraway.contrib.django.backend:DjangoBackend", "django")


@pytest.mark.parametrize("name", ["bare-name", "Bare-Name", "bare-name://"])
def test_a_bare_name_in_the_table_is_found_without_a_scheme(name: str) -> None:
    table = {"bare-name": ("caraway.engines.memory.backend:MemoryBackend", None)}

    assert _load(table, name, "result backend", Backend) is MemoryBackend


@pytest.mark.parametrize(
    "name",
    ["django", "django_celery_beat.schedulers:DatabaseScheduler",
     "django_celery_beat.schedulers.DatabaseScheduler"],
)  # fmt: skip
def test_the_django_scheduler_answers_to_its_celery_names(name: str) -> None:
    assert SCHEDULER_ALIASES[name] == "caraway.contrib.django.scheduler:DatabaseScheduler"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_a_zoned_crontab_reads_its_fields_in_its_own_zone() -> None:
    app = Celery("zones", broker="memory://", timezone="UTC", set_as_current=False)
    now = _at("2026-01-01T19:00:30")  # 04:00:30 in Tokyo
    tokyo = ZonedCrontab(minute=0, hour=4, zone="Asia/Tokyo", app=app, nowfun=lambda: now)
    utc = ZonedCrontab(minute=0, hour=4, zone="UTC", app=app, nowfun=lambda: now)

    assert tokyo.is_due(_at("2026-01-01T18:00:00")).is_due
    assert not utc.is_due(_at("2026-01-01T18:00:00")).is_due
    assert pickle.loads(pickle.dumps(tokyo)).zone == "Asia/Tokyo"


def test_a_zoned_crontab_with_an_unknown_zone_names_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="Mars/Olympus"):
        ZonedCrontab(minute=0, zone="Mars/Olympus")


def test_a_clocked_schedule_is_due_once_its_moment_has_come() -> None:
    moment = _at("2026-03-01T12:00:00")
    before = clocked(moment, nowfun=lambda: _at("2026-03-01T11:59:00"))
    after = clocked(moment, nowfun=lambda: _at("2026-03-01T12:00:01"))

    assert before.is_due(_at("2026-03-01T11:00:00")) == (False, 60.0)
    assert after.is_due(_at("2026-03-01T11:00:00")).is_due
    assert after.due_time(_at("2026-03-01T11:00:00"), _at("2026-03-01T12:00:01")) == moment
