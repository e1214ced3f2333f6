"""Celery's own ``examples/django`` project, run on caraway with only ``celery`` changed.

The project comes from the Celery 5.7.0 sdist on PyPI (fetched once with ``pip download`` into
the git-ignored ``.cache/pypi``, its sha256 checked) and is copied to a temporary folder. What
is changed, and nothing else:

- in its Python files, ``from celery import`` becomes ``from caraway import`` (two lines:
  ``proj/celery.py`` and ``demoapp/tasks.py``; ``Celery(`` and ``shared_task`` keep their names);
- the broker: its settings name RabbitMQ on localhost (``amqp://guest:guest@localhost``) and its
  README says to run one; the test gives it a vhost of its own, through a settings module
  beside the project (``from proj.settings import *`` plus ``CELERY_BROKER_URL``) chosen with
  ``DJANGO_SETTINGS_MODULE``, which ``proj/celery.py`` and ``manage.py`` only ``setdefault``.

The result backend stays its ``db+sqlite:///results.sqlite``, its database its SQLite file. The
worker starts as its README says (``caraway -A proj worker -l INFO``), the tasks are called from
``manage.py shell`` as the README does, and the database is read after.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest
from celery_sdist import copy_example
from django_support import DjangoProject, requires_django
from polling import poll
from services import rabbitmq_vhost

pytest.importorskip("sqlalchemy")

#: Download, migrate, a worker boot on a loaded machine: more than the default 60 s.
pytestmark = [requires_django, pytest.mark.timeout(180)]

#: What the README does in ``manage.py shell``, and the model tasks of ``demoapp/tasks.py``.
SHELL = """
import json
from demoapp.models import Widget
from demoapp.tasks import add, count_widgets, mul, rename_widget, xsum
from proj.celery import debug_task

widget = Widget.objects.create(name="widget")
print(json.dumps({
    "add": add.delay(2, 3).get(timeout=30),
    "mul": mul.delay(4, 5).get(timeout=30),
    "xsum": xsum.delay([1, 2, 3]).get(timeout=30),
    "delay_on_commit": add.delay_on_commit(2, 3),
    "count_widgets": count_widgets.delay().get(timeout=30),
    "rename_widget": rename_widget.delay(widget.id, "renamed").get(timeout=30),
    "debug_task": debug_task.delay().id is not None,
}))
"""


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoProject]:
    root = tmp_path_factory.mktemp("celery-django-example")
    project_dir = root / "django"
    assert copy_example("django", project_dir) == 2
    with rabbitmq_vhost("caraway-django-example") as broker:
        (project_dir / "caraway_test_broker.py").write_text(
            f"from proj.settings import *  # noqa: F403\n\nCELERY_BROKER_URL = {broker!r}\n"
        )
        results = f"db+sqlite:///{project_dir}/results.sqlite"
        project = DjangoProject(
            root, {}, cwd=project_dir, app="proj", broker=broker, backend=results
        )
        project.env["DJANGO_SETTINGS_MODULE"] = "caraway_test_broker"
        try:
            project.migrate()
            project.start_worker("prefork")
            yield project
        finally:
            project.close()


def test_celerys_django_example_runs_on_caraway(example: DjangoProject) -> None:
    output = example.run("manage.py", "shell", "-c", SHELL)
    answers = json.loads(output.splitlines()[-1])  # Django 5.2's shell may say what it imported

    assert answers == {
        "add": 5,
        "mul": 20,
        "xsum": 6,
        "delay_on_commit": None,  # as in Celery (the README's ``res.get()`` is wrong there too)
        "count_widgets": 1,
        "rename_widget": None,
        "debug_task": True,
    }
    with closing(sqlite3.connect(example.cwd / "db.sqlite3")) as db:
        assert db.execute("SELECT name FROM demoapp_widget").fetchall() == [("renamed",)]
    # debug_task is sent without waiting for it: its line may come after the shell returns.
    poll(lambda: "Request: <Context" in example.logs(), 30.0, "debug_task to print its request")
    logs = example.logs()
    assert "AppRegistryNotReady" not in logs
