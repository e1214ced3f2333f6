"""Celery's documented import paths against caraway (compat/names.py): for every module of
Celery's API reference, ``caraway.<same path>`` has each public name of the installed Celery's
module, or the table says why not; a refused module or name really fails to import."""

from __future__ import annotations

import functools
import importlib
import json
import subprocess
import sys
from typing import Any

import pytest

from caraway.settings import Status
from compat.names import MISSING_MODULES, MISSING_NAMES, MODULES, Gap, caraway_path

#: Run in a fresh interpreter: importing Celery's modules in the test process meets
#: whatever Celery apps earlier tests left current (``celery.contrib.testing.tasks``
#: resolves its ``celery.ping`` on the current app), so the names are read where no test ran.
_READ_NAMES = """
import importlib, json, sys, warnings
warnings.simplefilter("ignore")  # Celery's own deprecation warnings on import
found = {}
for name in json.loads(sys.argv[1]):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if exc.name is not None and exc.name.startswith("celery"):
            found[name] = {"error": repr(exc)}
        else:
            found[name] = {"unavailable": repr(exc)}  # needs what the test extra lacks
        continue
    names = getattr(module, "__all__", None)
    if names is None:  # the public names it defines
        names = [n for n, v in vars(module).items()
                 if getattr(v, "__module__", None) == module.__name__]
    found[name] = {"names": sorted(n for n in names if not n.startswith("_"))}
print(json.dumps(found))
"""


@functools.cache
def celery_modules() -> dict[str, dict[str, Any]]:
    """For each audited module of the installed Celery: its public names (``__all__``, else
    the names it defines), or why it did not import."""
    modules = json.dumps(sorted(MODULES))
    done = subprocess.run(
        [sys.executable, "-c", _READ_NAMES, modules], capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def celery_names(module: str) -> set[str] | None:
    """The public names of Celery's ``module``; None when it needs what the test extra
    lacks (Sphinx); an error when Celery has no such module."""
    entry = celery_modules()[module]
    assert "error" not in entry, f"Celery has no module {module}: {entry['error']}"
    return None if "unavailable" in entry else set(entry["names"])


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
    celery_names(module)  # fails if Celery has no such module

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(caraway_path(module))


@pytest.mark.parametrize("module", PRESENT)
def test_caraway_has_each_name_or_the_table_says_why_not(module: str) -> None:
    theirs = celery_names(module)
    assert theirs is not None
    ours = importlib.import_module(caraway_path(module))
    listed = MISSING_NAMES.get(module, {})

    lacking = {name for name in theirs if not hasattr(ours, name)}

    assert sorted(lacking - set(listed)) == []  # add it, or a row saying why not
    assert sorted(set(listed) - theirs) == []  # not Celery's
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
