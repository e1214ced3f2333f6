"""The parts of Celery's app API that real code reaches for: ``caraway.uuid``,
``app.clock``, ``on_init``, ``app.current_task`` and ``app.start``."""

from __future__ import annotations

import uuid as std_uuid
from typing import Any

import pytest

import caraway
from caraway import Caraway


def test_uuid_is_a_fresh_canonical_uuid4_string() -> None:
    first, second = caraway.uuid(), caraway.uuid()

    assert first != second
    assert str(std_uuid.UUID(first)) == first
    assert std_uuid.UUID(first).version == 4


def test_clock_is_a_lamport_clock_shared_by_control_and_events(app: Caraway) -> None:
    from caraway.control.mailbox import clock_of

    start = app.clock.value
    assert app.clock.forward() == start + 1
    assert app.clock.adjust(start + 10) == start + 11
    assert clock_of(app) is app.clock
    assert Caraway("other", set_as_current=False).clock is not app.clock


def test_on_init_runs_once_at_the_end_of_init() -> None:
    seen: list[Any] = []

    class MyApp(Caraway):
        def on_init(self) -> None:
            seen.append((self.main, self.conf.task_default_queue))

    MyApp("proj", set_as_current=False, task_default_queue="mine")

    assert seen == [("proj", "mine")]


def test_current_task_is_the_running_task(app: Caraway) -> None:
    @app.task
    def who() -> str | None:
        task = app.current_task
        return None if task is None else task.name

    assert app.current_task is None
    assert who.apply().get() == who.name
    assert app.current_task is None


def test_bugreport_gives_versions_engines_and_settings_with_secrets_masked() -> None:
    app = Caraway("rep", broker="redis://:s3cret@localhost:6379/3", set_as_current=False)
    app.conf.task_default_queue = "reports"

    text = app.bugreport()

    assert f"software -> caraway:{caraway.__version__} py:" in text
    assert "app -> rep\ntransport: redis://:**@localhost:6379/3" in text
    assert "task_default_queue: 'reports'" in text
    assert "s3cret" not in text
    assert caraway.bugreport(app) == text


def test_start_runs_a_command_for_this_app(
    app: Caraway, capsys: pytest.CaptureFixture[str]
) -> None:
    app.conf.task_default_queue = "from-the-app"

    app.start(["report"])

    assert "task_default_queue: 'from-the-app'" in capsys.readouterr().out


def test_start_given_sys_argv_skips_the_program_name(
    app: Caraway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["myapp.py", "report"])

    app.start()
    app.start(["myapp.py", "report"])

    assert capsys.readouterr().out.count("software -> caraway") == 2


def test_celerys_import_paths_for_these_helpers() -> None:
    """The paths Celery code imports from, with ``celery`` changed to ``caraway``."""
    from caraway import uuid
    from caraway.contrib.abortable import AbortableAsyncResult, AbortableTask
    from caraway.contrib.testing.manager import Manager, Sentinel
    from caraway.contrib.testing.tasks import ping
    from caraway.result import allow_join_result, denied_join_result

    assert all(map(callable, (uuid, allow_join_result, denied_join_result, Manager)))
    assert issubclass(AbortableTask, caraway.Task)
    assert issubclass(AbortableAsyncResult, caraway.AsyncResult)
    assert issubclass(Sentinel, Exception)
    assert ping.name == "celery.ping"
