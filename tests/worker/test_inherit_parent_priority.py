"""``task_inherit_parent_priority``: a task sent from inside a task without a priority of its
own gets the priority its parent was delivered with (Celery's behaviour), else the default."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from worker_support import WAIT, memory_app

from caraway import Celery


@pytest.mark.parametrize(("inherit", "expected"), [(True, 7), (False, 0)], ids=["on", "off"])
def test_a_child_sent_from_a_task_gets_its_parents_priority_only_with_the_setting(
    start_worker: Callable[..., Any], inherit: bool, expected: int
) -> None:
    app: Celery = memory_app(
        f"inherit-{uuid.uuid4().hex[:6]}", task_inherit_parent_priority=inherit
    )

    @app.task(name="inherit.child", bind=True)
    def child(self: Any) -> Any:
        return (self.request.delivery_info or {}).get("priority")

    @app.task(name="inherit.parent")
    def parent() -> str:
        return child.delay().id

    start_worker(app, concurrency=2)
    child_id = parent.apply_async(priority=7).get(timeout=WAIT)

    assert (app.AsyncResult(child_id).get(timeout=WAIT) or 0) == expected
    app.close()
