"""Celery's documented import paths against caraway (compat/names.py): for every module of
Celery's API reference, ``caraway.<same path>`` has each public name of the installed Celery's
module, or the table says why not; a refused module or name really fails to import."""

from __future__ import annotations

import importlib
import types
import warnings

import pytest

from caraway.settings import Status
from compat.names import MISSING_MODULES, MISSING_NAMES, MODULES, Gap, caraway_path


def celery_names(module: types.ModuleType) -> set[str]:
    """Its ``__all__``, else the public names it defines; private and dunder names left out."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n for n, v in vars(module).items() if getattr(v, "__module__", None) == module.__name__
        ]
    return {name for name in names if not name.startswith("_")}


def import_celery(name: str) -> types.ModuleType | None:
    """The installed Celery's module; None when it needs what the test extra lacks (Sphinx)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Celery's own deprecation warnings on import
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            if exc.name is not None and exc.name.startswith("celery"):
                raise
            return None


PRESENT = [m for m in MODULES if m not in MISSING_MODULES]


def test_every_row_is_an_audited_module_with_a_status_and_a_reason() -> None:
    assert len(MODULES) == len(set(MODULES))
    assert set(MISSING_MODULES) <= set(MODULES)
    assert set(MISSING_NAMES) <= set(PRESENT)
    gaps: list[Gap] = [*MISSING_MODULES.values()]
    gaps += [gap for names in MISSING_NAMES.values() for gap in names.values()]
    for gap in gaps:
        assert gap.status in (Status.REFUSED, Status.IGNORED)
        assert len(gap.reason) > 20, gap


@pytest.mark.parametrize("module", sorted(MISSING_MODULES))
def test_a_refused_module_is_one_of_celerys_and_caraway_has_none(module: str) -> None:
    import_celery(module)  # raises if Celery has no such module

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(caraway_path(module))


@pytest.mark.parametrize("module", PRESENT)
def test_caraway_has_each_name_or_the_table_says_why_not(module: str) -> None:
    celery_module = import_celery(module)
    assert celery_module is not None
    ours = importlib.import_module(caraway_path(module))
    listed = MISSING_NAMES.get(module, {})

    lacking = {name for name in celery_names(celery_module) if not hasattr(ours, name)}

    assert sorted(lacking - set(listed)) == []  # add it, or a row saying why not
    assert sorted(set(listed) - celery_names(celery_module)) == []  # not Celery's
    refused = {name for name, gap in listed.items() if gap.status is Status.REFUSED}
    assert sorted(refused - lacking) == []  # now present: drop the row


def test_the_helpers_added_for_celerys_paths_answer_as_celerys() -> None:
    from celery.events import Event as CeleryEvent
    from celery.events import group_from as celery_group_from
    from celery.events.state import heartbeat_expires as celery_expires
    from celery.utils.log import LOG_LEVELS as CELERY_LEVELS
    from celery.utils.log import mlevel as celery_mlevel

    from caraway.events import Event, group_from
    from caraway.events.state import heartbeat_expires
    from caraway.utils.log import LOG_LEVELS, mlevel

    for level in ("info", "WARNING", 40):
        assert mlevel(level) == celery_mlevel(level)
    assert {k: v for k, v in CELERY_LEVELS.items() if k in LOG_LEVELS} == LOG_LEVELS
    assert heartbeat_expires(100.0, 2.0) == celery_expires(100.0, 2.0)
    assert heartbeat_expires(100.0, 2.0, 150) == celery_expires(100.0, 2.0, 150)
    assert group_from("task-succeeded") == celery_group_from("task-succeeded") == "task"
    ours, theirs = (
        Event("worker-online", hostname="w1"),
        CeleryEvent("worker-online", hostname="w1"),
    )
    assert ours.keys() == theirs.keys()
    assert (ours["type"], ours["hostname"]) == (theirs["type"], theirs["hostname"])


def test_app_or_default_gives_the_current_app_when_none_is_given() -> None:
    from caraway import Celery
    from caraway.app import app_or_default

    app = Celery("paths", broker="memory://paths")

    assert app_or_default() is app
    other = Celery("other", broker="memory://other", set_as_current=False)
    assert app_or_default(other) is other


def test_celerys_app_paths_name_caraways_own_objects() -> None:
    import caraway
    from caraway.app import base, control, events, log, registry, task
    from caraway.events.app_events import Events
    from caraway.utils.log import TaskFormatter

    assert (task.Task, base.Celery, registry.TaskRegistry) == (
        caraway.Task, caraway.Celery, type(caraway.Celery("paths", set_as_current=False).tasks)
    )  # fmt: skip
    assert (control.Control, control.Inspect) == (caraway.control.Control, caraway.control.Inspect)
    assert (events.Events, log.TaskFormatter) == (Events, TaskFormatter)
    assert control.flatten_reply([{"a@h": {"ok": 1}}, {"b@h": {"ok": 2}}]) == {
        "a@h": {"ok": 1}, "b@h": {"ok": 2},
    }  # fmt: skip
