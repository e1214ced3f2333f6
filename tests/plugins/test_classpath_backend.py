"""``result_backend = "mypkg.mod:MyBackend"`` (or ``mypkg.mod.MyBackend``), as Celery accepts:
a backend class of the user's own, in a module of theirs, stores a real worker's results."""

from __future__ import annotations

import uuid

import pytest
from notes_backend import NotesBackend

from caraway import Caraway
from caraway.contrib.testing.worker import start_worker
from caraway.engines.base.backend import TASK_KEY_PREFIX
from caraway.exceptions import ImproperlyConfigured


@pytest.mark.parametrize("path", ["notes_backend:NotesBackend", "notes_backend.NotesBackend"])
def test_a_worker_stores_results_in_a_backend_named_by_class_path(path: str) -> None:
    app = Caraway(
        "classpath", broker=f"memory://classpath-{uuid.uuid4().hex}", set_as_current=False
    )
    app.conf.result_backend = path

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    try:
        with start_worker(app, pool="solo", perform_ping_check=False):
            result = add.delay(2, 3)
            assert result.get(timeout=10) == 5

        assert isinstance(app.backend, NotesBackend)
        assert app.backend.url == path
        assert TASK_KEY_PREFIX + result.id in NotesBackend.notes
    finally:
        app.close()


def test_a_class_path_to_something_else_than_a_backend_is_refused() -> None:
    app = Caraway("classpath", broker="memory://classpath-bad", set_as_current=False,
                  backend="notes_backend:threading")  # fmt: skip

    with pytest.raises(ImproperlyConfigured, match="is not a result backend engine"):
        app.backend  # noqa: B018 - made on first use
