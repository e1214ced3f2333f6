"""No silent gaps: every setting works, is refused, or is ignored on purpose with a warning.

A "works" row must be read somewhere in ``caraway/`` besides ``settings.py`` (found over the
AST: ``conf.name``, ``conf["name"]``, ``conf.get("name")``, or the name passed to a helper
such as ``_option(task, "track_started", "task_track_started")``); comments, docstrings and
dict keys (which set a value, never read it) do not count.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from caraway import Celery, config
from caraway.exceptions import ConfigurationWarning, ImproperlyConfigured
from caraway.settings import SETTINGS, Setting, Status

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "caraway"


def _names_read(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            yield node.attr
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            yield str(node.slice.value)
        elif isinstance(node, ast.Call):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield arg.value


def _read_outside_settings() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "settings.py":
            continue
        found.update(_names_read(ast.parse(path.read_text(), str(path))))
    return found & set(SETTINGS)


READ = _read_outside_settings()
ROWS = list(SETTINGS.values())


def _rows(status: Status) -> list[Setting]:
    return [row for row in ROWS if row.status is status]


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which ignored settings this process has warned about already."""
    monkeypatch.setattr(config, "_warned_ignored", set())


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_every_row_has_a_status_and_refused_or_ignored_ones_say_why(row: Setting) -> None:
    assert row.status is not None, f"{row.name}: add .works(), .refused(...) or .ignored(...)"
    if row.status is Status.WORKS:
        assert not row.reason
        assert not row.harmless
    else:
        assert len(row.reason) > 20, f"{row.name}: say why in a sentence"
        assert not row.test


@pytest.mark.parametrize("row", _rows(Status.WORKS), ids=[row.name for row in _rows(Status.WORKS)])
def test_a_working_setting_is_read_outside_the_table(row: Setting) -> None:
    assert row.name in READ, f"{row.name} is marked works but nothing in caraway/ reads it"


@pytest.mark.parametrize("row", [r for r in ROWS if r.test], ids=[r.name for r in ROWS if r.test])
def test_the_test_named_for_a_working_setting_exists(row: Setting) -> None:
    path, _, name = row.test.partition("::")
    source = (ROOT / path).read_text()
    assert f"def {name}(" in source, f"{row.name}: no test {row.test}"
    assert row.name in source or any(old in source for old in row.old)


def test_the_counts_add_up() -> None:
    counts = {status: len(_rows(status)) for status in Status}
    assert sum(counts.values()) == len(SETTINGS)
    assert counts[Status.WORKS] > counts[Status.IGNORED] > counts[Status.REFUSED] > 0


def test_a_refused_setting_raises_at_configuration_naming_what_to_use() -> None:
    app = Celery("audit", broker="memory://audit-refused", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match=r"'broker_transport'.*scheme"):
        app.conf.update(broker_transport="redis")

    app.config_from_object({"worker_consumer": "proj.consumer:MyConsumer"})
    with pytest.raises(ImproperlyConfigured, match=r"'worker_consumer'.*signals"):
        app.finalize()
    with pytest.raises(ImproperlyConfigured):  # keeps failing, never reads as empty
        app.finalize()
    assert not app.finalized


def test_a_refused_setting_set_only_by_the_environment_fails_at_finalize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_READ_URL", "redis://replica:6379/0")
    app = Celery("audit", broker="memory://audit-env", set_as_current=False)
    with pytest.raises(
        ImproperlyConfigured, match=r"'CELERY_BROKER_READ_URL \(broker_read_url\)'.*broker_url"
    ):
        app.finalize()


def test_an_old_name_of_a_refused_setting_is_refused_under_its_old_name() -> None:
    app = Celery("audit", broker="memory://audit-old", set_as_current=False)
    app.config_from_object({"CELERY_RESULT_DBURI": "sqlite:///results.db"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigurationWarning)  # "rename it": not the point
        with pytest.raises(ImproperlyConfigured, match=r"CELERY_RESULT_DBURI \(database_url\)"):
            _ = app.conf.task_serializer


def test_defaults_spelled_out_pass_quietly() -> None:
    app = Celery("audit", broker="memory://audit-defaults", set_as_current=False)
    app.config_from_object(
        {
            "broker_transport": None,
            "task_protocol": 2,
            "cassandra_servers": (),
            "worker_log_color": False,
        }
    )
    assert app.conf.task_protocol == 2  # no error, and (filterwarnings=error) no warning


def test_an_ignored_setting_warns_once_naming_it_and_the_reason(fresh_warnings: None) -> None:
    first = Celery("audit", broker="memory://audit-ignored", set_as_current=False)
    with pytest.warns(
        ConfigurationWarning, match=r"'broker_pool_limit'.*ignored.*connection pool"
    ) as seen:
        first.conf.update(broker_pool_limit=50)
    assert len(seen) == 1

    second = Celery("audit2", broker="memory://audit-ignored2", set_as_current=False)
    second.config_from_object({"broker_pool_limit": 20})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert second.conf.broker_pool_limit == 20  # kept, and not warned about again


def test_broker_pool_acquire_timeout_is_known_and_warns_that_no_send_waits_on_a_pool(
    fresh_warnings: None,
) -> None:
    app = Celery("audit", broker="memory://audit-acquire", set_as_current=False)
    assert app.conf.broker_pool_acquire_timeout is None

    with pytest.warns(ConfigurationWarning, match=r"'broker_pool_acquire_timeout'.*no producer"):
        app.conf.broker_pool_acquire_timeout = 30
    assert app.conf.broker_pool_acquire_timeout == 30
