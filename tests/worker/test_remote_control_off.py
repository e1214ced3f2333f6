"""``worker_enable_remote_control = False``: the worker runs tasks but binds no pidbox, so it
neither answers ``ping`` nor applies ``rate_limit`` (a worker beside it, with remote control
on, shows the commands do arrive)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker_support import WAIT, sqlite_app

from caraway import Celery


def _app(main: str, path: Path, **conf: Any) -> tuple[Celery, Any]:
    app = sqlite_app(main, path, **conf)

    @app.task(name="remoteoff.add", rate_limit="5/m")
    def add(x: int, y: int) -> int:
        return x + y

    return app, add


def test_a_worker_with_remote_control_off_neither_answers_nor_obeys(
    tmp_path: Path, start_worker: Callable[..., Any]
) -> None:
    broker_file = tmp_path / "b.sqlite3"
    off, off_add = _app("remote-off", broker_file, worker_enable_remote_control=False)
    on, on_add = _app("remote-on", broker_file)
    try:
        start_worker(off, hostname="off@embedded", concurrency=1)
        start_worker(on, hostname="on@embedded", concurrency=1, queues=["other"])
        assert off_add.delay(2, 3).get(timeout=WAIT) == 5  # it serves tasks all the same

        pings = off.control.ping(timeout=1.0)
        limited = off.control.rate_limit("remoteoff.add", "10/s", reply=True, timeout=1.0)

        assert [next(iter(reply)) for reply in pings] == ["on@embedded"]
        assert [next(iter(reply)) for reply in limited or []] == ["on@embedded"]
        assert on_add.rate_limit == "10/s"
        assert off_add.rate_limit == "5/m"  # the worker sharing this task object never heard
    finally:
        off.close()
        on.close()
