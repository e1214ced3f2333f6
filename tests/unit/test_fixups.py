"""Fixups: integrations an app loads by dotted name (the Django one is built in).

A fixup may give the app a default base task class and the packages that
``autodiscover_tasks()`` searches when called without any; the Django fixup stays off outside
a Django project. (Django itself runs in tests/django, in subprocesses.)
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from caraway import Caraway, Task
from caraway.exceptions import CarawayWarning


@dataclass
class PollsFixup:
    """Names an installed app by ``AppConfig`` path, and one without a tasks module."""

    task_cls: str | None = None
    asked: list[str] = field(default_factory=list)

    def autodiscover_tasks(self) -> Iterable[str]:
        self.asked.append("packages")
        return ["fakeproj_polls.apps.PollsConfig", "fakeproj_missing"]


class PollsTask(Task):  # type: ignore[type-arg]
    pass


def polls_fixup(app: Caraway) -> PollsFixup:
    return PollsFixup()


def polls_fixup_with_task_cls(app: Caraway) -> PollsFixup:
    return PollsFixup(task_cls=f"{__name__}:PollsTask")


@pytest.fixture
def polls_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fakeproj_polls`` with ``apps.PollsConfig`` (name ``fakeproj_polls``) and ``tasks``."""
    package = types.ModuleType("fakeproj_polls")
    package.__path__ = []
    apps = types.ModuleType("fakeproj_polls.apps")
    apps.PollsConfig = type("PollsConfig", (), {"name": "fakeproj_polls"})  # type: ignore[attr-defined]
    for module in (package, apps, types.ModuleType("fakeproj_polls.tasks")):
        monkeypatch.setitem(sys.modules, module.__name__, module)


@pytest.mark.usefixtures("polls_app")
def test_argument_less_autodiscovery_searches_the_fixups_packages_lazily() -> None:
    app = Caraway("proj", set_as_current=False, fixups=[f"{__name__}:polls_fixup"])
    [fixup] = app._fixups
    assert isinstance(fixup, PollsFixup)

    app.autodiscover_tasks()
    assert fixup.asked == []  # not before the worker imports task modules
    names = app.import_task_modules()

    assert fixup.asked == ["packages"]
    assert names == ["fakeproj_polls.tasks"]  # the AppConfig path stood for its package


@pytest.mark.usefixtures("polls_app")
def test_an_appconfig_path_in_an_explicit_list_stands_for_its_package() -> None:
    app = Caraway("proj", set_as_current=False, fixups=[])
    app.autodiscover_tasks(lambda: ["fakeproj_polls.apps.PollsConfig"])

    assert app.import_task_modules() == ["fakeproj_polls.tasks"]


def test_a_fixups_task_cls_is_the_default_base_unless_the_app_names_one() -> None:
    name = f"{__name__}:polls_fixup_with_task_cls"
    by_fixup = Caraway("proj", set_as_current=False, fixups=[name])
    by_user = Caraway("proj", set_as_current=False, fixups=[name], task_cls=Task)

    assert issubclass(by_fixup.Task, PollsTask)
    assert not issubclass(by_user.Task, PollsTask)


def test_the_django_fixup_is_off_outside_a_django_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    app = Caraway("proj", set_as_current=False)

    assert app.fixups == ("caraway.contrib.django.fixup:fixup",)
    assert app._fixups == []
    assert "DjangoTask" not in [cls.__name__ for cls in app.Task.__mro__]


def test_the_django_fixup_says_how_to_install_django_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    monkeypatch.setitem(sys.modules, "django", None)  # ``import django`` raises ImportError

    with pytest.warns(CarawayWarning, match=r'pip install "caraway\[django\]"'):
        app = Caraway("proj", set_as_current=False)
    assert app._fixups == []
