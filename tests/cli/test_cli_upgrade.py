"""``caraway upgrade settings``: Celery 3 names renamed in place, values and the rest kept."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from caraway import Caraway
from caraway.cli.main import cli

OLD = """\
# A Celery 3 config module.
BROKER_URL = "memory://upgrade"
CELERY_ALWAYS_EAGER = True
CELERYD_CONCURRENCY: int = 3
MY_OWN_SETTING = "kept"  # CELERY_RESULT_BACKEND in a comment stays too
"""


def _settings(path: Path) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(path.read_text(), namespace)  # the file is the test's own
    return {key: value for key, value in namespace.items() if key.isupper() or "_" in key}


def test_old_names_become_new_ones_with_a_backup(tmp_path: Path) -> None:
    config = tmp_path / "celeryconfig.py"
    config.write_text(OLD)

    result = CliRunner().invoke(cli, ["upgrade", "settings", str(config)])

    assert result.exit_code == 0, result.output
    assert "renamed 3 setting(s)" in result.output
    assert (tmp_path / "celeryconfig.py.orig").read_text() == OLD
    upgraded = config.read_text()
    assert 'broker_url = "memory://upgrade"' in upgraded
    assert "CELERY_RESULT_BACKEND in a comment" in upgraded
    app = Caraway("up", set_as_current=False)
    app.conf.update({k: v for k, v in _settings(config).items() if not k.startswith("__")
                     and k != "MY_OWN_SETTING"})  # fmt: skip
    assert (app.conf.task_always_eager, app.conf.worker_concurrency) == (True, 3)


def test_django_keeps_the_namespace_and_no_backup_means_none(tmp_path: Path) -> None:
    config = tmp_path / "settings.py"
    config.write_text(OLD)

    result = CliRunner().invoke(cli, ["upgrade", "settings", str(config), "--django",
                                      "--no-backup"])  # fmt: skip

    assert result.exit_code == 0, result.output
    names = set(_settings(config))
    assert {"CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER", "CELERY_WORKER_CONCURRENCY"} <= names
    assert not (tmp_path / "settings.py.orig").exists()
    again = CliRunner().invoke(cli, ["upgrade", "settings", str(config), "--django"])
    assert "nothing changed" in again.output


def test_celery_commands_caraway_lacks_say_what_to_use() -> None:
    result = CliRunner().invoke(cli, ["amqp", "queue.declare", "x"])
    assert result.exit_code == 2
    assert "caraway has no 'amqp' command: it is an AMQP admin shell; use rabbitmqadmin" in (
        result.output
    )
